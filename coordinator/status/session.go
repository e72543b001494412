package status

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// A session is a signed cookie "v1.<token id>.<generation>.<issued unix>.<nonce>.<hmac>"
// under the cluster's replicated token secret. It holds no secret: the token's id, the
// token's session generation when it was issued, and when. Every check reads the token
// from the replicated store: a deleted token ends its sessions, and so does a logout,
// which raises the token's session generation through Raft (state.EndSessions), so a
// cookie logged out at one coordinator is refused by all of them once they have applied
// that write (milliseconds; the coordinator that logged out waits for it). A session
// lasts MaxSession from its issue, however often it is used or replayed.

const (
	cookieName   = "rivet_status"
	maxLoginBody = 4 << 10
	// MaxSession is the longest a login lasts: an absolute limit, not an idle one.
	MaxSession = 8 * time.Hour
	// clockSkew is how far a session's issue time may be ahead of this coordinator's
	// clock (it may have been issued by another one).
	clockSkew = time.Minute
	// logoutWait bounds how long a logout waits for this coordinator to apply it.
	logoutWait = 3 * time.Second
)

// session is what a verified cookie says.
type session struct {
	tokenID string
	gen     uint64
	issued  time.Time
}

func (h *Handler) secret() []byte { return []byte(h.store.Cluster().TokenSecret) }

func (h *Handler) sign(parts ...string) string {
	mac := hmac.New(sha256.New, h.secret())
	mac.Write([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(mac.Sum(nil))
}

func (h *Handler) newSession(s session) string {
	fields := []string{"v1", s.tokenID, strconv.FormatUint(s.gen, 10), strconv.FormatInt(s.issued.Unix(), 10), auth.NewSecret(8)}
	return strings.Join(append(fields, h.sign(append([]string{"status-session"}, fields...)...)), ".")
}

// verifySession checks a cookie's shape and signature; nil when either is wrong.
func (h *Handler) verifySession(value string) *session {
	parts := strings.Split(value, ".")
	if len(parts) != 6 || parts[0] != "v1" {
		return nil
	}
	want := h.sign(append([]string{"status-session"}, parts[:5]...)...)
	if subtle.ConstantTimeCompare([]byte(want), []byte(parts[5])) != 1 {
		return nil
	}
	gen, err1 := strconv.ParseUint(parts[2], 10, 64)
	issued, err2 := strconv.ParseInt(parts[3], 10, 64)
	if err1 != nil || err2 != nil {
		return nil
	}
	return &session{tokenID: parts[1], gen: gen, issued: time.Unix(issued, 0)}
}

// csrfFor derives the form token from the session: a page can only POST what it was
// rendered with, and another site cannot read it.
func (h *Handler) csrfFor(cookie string) string { return h.sign("status-csrf", cookie)[:32] }

// Why an operator was not recognised; withOperator turns them into answers.
var (
	errNoLogin     = errors.New("no operator credential")
	errDeadSession = errors.New("the session cookie is no longer valid")
)

type throttledError struct{ wait time.Duration }

func (e throttledError) Error() string { return "throttled for " + e.wait.String() }

// operator resolves the caller from a bearer token (scripts, benches) or the session
// cookie (browsers). Only admin and viewer tokens may look at the pages.
func (h *Handler) operator(r *http.Request) (operator, error) {
	if len(h.secret()) == 0 {
		return operator{}, errNoLogin // cluster not initialised yet
	}
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return h.bearerOperator(r, bearer)
	}
	c, err := r.Cookie(cookieName)
	if err != nil {
		return operator{}, errNoLogin
	}
	return h.sessionOperator(r, c.Value)
}

func (h *Handler) bearerOperator(r *http.Request, bearer string) (operator, error) {
	id, _ := auth.StoredTokenID(bearer)
	keys := auth.Keys(h.store, r.RemoteAddr, id)
	if wait, ok := h.cfg.Throttle.Allow(auth.SurfacePages, keys); !ok {
		return operator{}, throttledError{wait}
	}
	p, err := auth.Resolve(h.store, bearer)
	if err != nil {
		h.cfg.Throttle.Fail(auth.SurfacePages, auth.ReasonOf(err), keys)
		return operator{}, errNoLogin
	}
	if !p.CanRead() {
		h.cfg.Throttle.Count(auth.SurfacePages, auth.ReasonRole)
		return operator{}, errNoLogin
	}
	return operator{Principal: p, bearer: bearer}, nil
}

// sessionOperator checks a session cookie. A forged one drains the source's bucket; one
// that was genuine but has ended (expired, logged out, its token deleted) is only counted:
// a browser tab left open after a logout is no attacker.
func (h *Handler) sessionOperator(r *http.Request, cookie string) (operator, error) {
	s := h.verifySession(cookie)
	if s == nil {
		h.cfg.Throttle.Fail(auth.SurfacePages, auth.ReasonForgedSession, auth.Keys(h.store, r.RemoteAddr, ""))
		return operator{}, errDeadSession
	}
	p, reason := h.sessionPrincipal(*s)
	if reason != "" {
		h.cfg.Throttle.Count(auth.SurfacePages, reason)
		return operator{}, errDeadSession
	}
	return operator{Principal: p, CSRF: h.csrfFor(cookie), session: s}, nil
}

// sessionPrincipal says who a verified session belongs to, or why it no longer holds.
func (h *Handler) sessionPrincipal(s session) (auth.Principal, auth.Reason) {
	t, ok := h.store.Token(s.tokenID)
	if !ok || (t.Role != shared.TokenAdmin && t.Role != shared.TokenViewer) {
		return auth.Principal{}, auth.ReasonUnknown
	}
	if age := h.cfg.Now().Sub(s.issued); age >= h.cfg.SessionTTL || age < -clockSkew {
		return auth.Principal{}, auth.ReasonExpiredSession
	}
	if s.gen < t.SessionGen {
		return auth.Principal{}, auth.ReasonEndedSession
	}
	return auth.Principal{Kind: auth.Kind(t.Role), Name: t.Name}, ""
}

// stillValid reports whether the credential a long request (the event stream) started
// with still holds: the stream of a session that was logged out ends.
func (h *Handler) stillValid(op operator) bool {
	if op.session != nil {
		_, reason := h.sessionPrincipal(*op.session)
		return reason == ""
	}
	p, err := auth.Resolve(h.store, op.bearer)
	return err == nil && p.CanRead()
}

// sameOrigin reports whether a browser's POST came from one of our own pages: Origin,
// when sent, must be this host, and Sec-Fetch-Site, when sent, same-origin. Browsers send
// at least one of them on every cross-site form post; scripts send neither.
func sameOrigin(r *http.Request) bool {
	if origin := r.Header.Get("Origin"); origin != "" && origin != "https://"+r.Host && origin != "http://"+r.Host {
		return false
	}
	site := r.Header.Get("Sec-Fetch-Site")
	return site == "" || site == "same-origin"
}

// checkPost refuses a state-changing request that did not come from one of our own
// forms: the CSRF field must match the session, and a browser's Origin must be ours.
func (h *Handler) checkPost(r *http.Request, op operator) bool {
	if op.bearer != "" {
		return true // browsers never attach bearer headers by themselves
	}
	if !sameOrigin(r) {
		return false
	}
	got := r.PostFormValue("csrf")
	return op.CSRF != "" && subtle.ConstantTimeCompare([]byte(got), []byte(op.CSRF)) == 1
}

type loginPage struct {
	page
	Next  string
	Error string
}

func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) {
	h.render(w, http.StatusOK, "login", loginPage{page: page{Title: "Log in"}, Next: safeNext(r.URL.Query().Get("next"))})
}

// login trades an operator token for a session cookie. The token itself is not kept.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	next := safeNext(r.PostFormValue("next"))
	fail := func(status int, msg string) {
		h.render(w, status, "login", loginPage{page: page{Title: "Log in"}, Next: next, Error: msg})
	}
	if !sameOrigin(r) {
		h.cfg.Throttle.Count(auth.SurfaceLogin, auth.ReasonForeignOrigin)
		h.log.Warn("status login refused: posted from another site", "remote", r.RemoteAddr)
		fail(http.StatusForbidden, "This login form was posted from another site. Open the status page yourself and log in there.")
		return
	}
	if len(h.secret()) == 0 {
		fail(http.StatusUnauthorized, "The cluster is not initialised yet; try again in a moment.")
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	id, _ := auth.StoredTokenID(token)
	keys := auth.Keys(h.store, r.RemoteAddr, id)
	if wait, ok := h.cfg.Throttle.Allow(auth.SurfaceLogin, keys); !ok {
		secs := auth.RetryAfterSeconds(wait)
		h.log.Warn("status login throttled", "remote", r.RemoteAddr, "retry_after_s", secs)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		fail(http.StatusTooManyRequests, fmt.Sprintf("Too many failed logins from here; try again in %d seconds.", secs))
		return
	}
	p, err := auth.Resolve(h.store, token)
	reason := auth.ReasonOf(err)
	if err == nil && !p.CanRead() {
		reason = auth.ReasonRole
	}
	t, stored := h.store.Token(id)
	if err != nil || !p.CanRead() || !stored {
		h.cfg.Throttle.Fail(auth.SurfaceLogin, reason, keys)
		h.log.Info("status login refused", "remote", r.RemoteAddr, "reason", reason)
		fail(http.StatusUnauthorized, "That is not an admin or viewer token. Create one with `rivet tokens create --name NAME --role viewer`.")
		return
	}
	s := session{tokenID: id, gen: t.SessionGen, issued: h.cfg.Now()}
	expiry := s.issued.Add(h.cfg.SessionTTL)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: h.newSession(s), Path: Prefix,
		Expires: expiry, MaxAge: int(h.cfg.SessionTTL.Seconds()), HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	h.log.Info("status login", "operator", p.Name, "role", p.Kind, "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the session on every coordinator, then drops the cookie. If the end
// cannot be recorded the operator is told so: the cookie would still work elsewhere.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request, op operator) {
	if !h.checkPost(r, op) {
		http.Error(w, "stale or foreign form; reload the page and try again", http.StatusForbidden)
		return
	}
	if op.session != nil {
		if err := h.endSessions(r.Context(), *op.session); err != nil {
			h.log.Warn("status logout not recorded", "operator", op.Name, "err", err)
			http.Error(w, "the logout could not be recorded, so the session still works: "+err.Error()+"; try again",
				http.StatusServiceUnavailable)
			return
		}
	}
	clearCookie(w)
	h.log.Info("status logout", "operator", op.Name)
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// endSessions replicates the end of the token's sessions up to s's generation and waits
// until this coordinator has applied it (a follower's write returns once the leader has
// committed it), so the old cookie is refused here at once.
func (h *Handler) endSessions(ctx context.Context, s session) error {
	_, err := h.cfg.Backend.Apply(ctx, state.EndSessions{TokenID: s.tokenID, Gen: s.gen})
	switch {
	case state.KindOf(err) == state.KindNotFound:
		return nil // the token is gone: none of its sessions works anywhere
	case err != nil:
		return err
	}
	deadline := time.Now().Add(logoutWait)
	for {
		if t, ok := h.store.Token(s.tokenID); !ok || t.SessionGen > s.gen {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("this coordinator has not applied the logout within %s", logoutWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix, MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// safeNext keeps a post-login redirect on the status pages (no open redirect).
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return Prefix
	}
	return next
}
