package status

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator/auth"
)

// Sessions are stateless signed cookies: "<token id>.<expiry unix>.<hmac>", signed with
// the cluster's replicated token secret. So a login works on every coordinator and
// survives restarts, and revoking the operator token ends its sessions at once (the
// token id is looked up on every request). The cookie never holds the token's secret.

const (
	cookieName   = "rivet_status"
	maxLoginBody = 4 << 10
)

func (h *Handler) secret() []byte { return []byte(h.store.Cluster().TokenSecret) }

func (h *Handler) sign(parts ...string) string {
	mac := hmac.New(sha256.New, h.secret())
	mac.Write([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(mac.Sum(nil))
}

func (h *Handler) newSession(tokenID string, expiry time.Time) string {
	exp := strconv.FormatInt(expiry.Unix(), 10)
	return tokenID + "." + exp + "." + h.sign("status-session", tokenID, exp)
}

// csrfFor derives the form token from the session: a page can only POST what it was
// rendered with, and another site cannot read it.
func (h *Handler) csrfFor(session string) string { return h.sign("status-csrf", session)[:32] }

// operator resolves the caller from a bearer token (scripts, benches) or the session
// cookie (browsers). Only admin and viewer tokens may look at the pages.
func (h *Handler) operator(r *http.Request) (operator, bool) {
	if len(h.secret()) == 0 {
		return operator{}, false // cluster not initialised yet
	}
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		p, err := auth.Resolve(h.store, bearer)
		if err != nil || !p.CanRead() {
			return operator{}, false
		}
		return operator{Principal: p, bearer: true}, true
	}
	c, err := r.Cookie(cookieName)
	if err != nil {
		return operator{}, false
	}
	parts := strings.Split(c.Value, ".")
	if len(parts) != 3 {
		return operator{}, false
	}
	want := h.sign("status-session", parts[0], parts[1])
	if subtle.ConstantTimeCompare([]byte(want), []byte(parts[2])) != 1 {
		return operator{}, false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || time.Now().Unix() > exp {
		return operator{}, false
	}
	t, ok := h.store.Token(parts[0])
	if !ok || (t.Role != string(auth.KindAdmin) && t.Role != string(auth.KindViewer)) {
		return operator{}, false
	}
	return operator{Principal: auth.Principal{Kind: auth.Kind(t.Role), Name: t.Name}, CSRF: h.csrfFor(c.Value)}, true
}

// checkPost refuses a state-changing request that did not come from one of our own
// forms: the CSRF field must match the session, and a browser's Origin must be ours.
func (h *Handler) checkPost(r *http.Request, op operator) bool {
	if op.bearer {
		return true // browsers never attach bearer headers by themselves
	}
	if origin := r.Header.Get("Origin"); origin != "" && origin != "https://"+r.Host && origin != "http://"+r.Host {
		return false
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
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
	token := strings.TrimSpace(r.PostFormValue("token"))
	fail := func(msg string) {
		h.render(w, http.StatusUnauthorized, "login", loginPage{page: page{Title: "Log in"}, Next: next, Error: msg})
	}
	if len(h.secret()) == 0 {
		fail("The cluster is not initialised yet; try again in a moment.")
		return
	}
	p, err := auth.Resolve(h.store, token)
	if err != nil || !p.CanRead() {
		h.log.Info("status login refused", "remote", r.RemoteAddr)
		fail("That is not an admin or viewer token. Create one with `rivet tokens create --name NAME --role viewer`.")
		return
	}
	id := strings.Split(token, "_")[1] // rvo_<id>_<secret>, checked by Resolve
	expiry := time.Now().Add(h.cfg.SessionTTL)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: h.newSession(id, expiry), Path: Prefix,
		Expires: expiry, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	h.log.Info("status login", "operator", p.Name, "role", p.Kind, "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request, op operator) {
	if !h.checkPost(r, op) {
		http.Error(w, "stale or foreign form; reload the page and try again", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix, MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// safeNext keeps a post-login redirect on the status pages (no open redirect).
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return Prefix
	}
	return next
}
