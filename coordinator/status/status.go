// Package status serves the operator's web pages: the fleet at a glance, one machine in
// detail, the cluster (Raft, Serf, boot services) and the roles. Pages are rendered on the
// server with html/template from embedded files: no CDN, no build step, no framework.
// A small script keeps them live over Server-Sent Events; without JavaScript they refresh
// themselves. Operators log in with their operator tokens: viewers see, admins act.
//
// Nothing secret is ever rendered: pages show machine records, timelines, roles and
// membership, never the cluster secrets, swarm tokens or any token value.
package status

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// Prefix is where the pages live on the API server.
const Prefix = "/status/"

//go:embed templates/*.tmpl static/*
var files embed.FS

// Backend is the coordinator as the pages need it.
type Backend interface {
	Store() *state.Store
	Apply(ctx context.Context, cmd state.Command) (state.Result, error)
	Members() shared.Members
}

// Config configures the pages.
type Config struct {
	Backend Backend
	// Gatherer supplies the boot-service and image counters for the cluster page.
	Gatherer prometheus.Gatherer
	// Kick asks the planner to run now (after a re-plan or release); optional.
	Kick   func()
	Logger *slog.Logger
	// Coalesce is the shortest time between two live updates of the same machine
	// (default one second).
	Coalesce time.Duration
	// SessionTTL is how long a login lasts from the moment it is made (default and at
	// most MaxSession).
	SessionTTL time.Duration
	// Throttle counts and slows failed logins and bad credentials; share the API's, so a
	// guesser gets one budget per coordinator (default: one of the pages' own).
	Throttle *auth.Throttle
	// Now is the clock sessions are issued and checked with (default time.Now).
	Now func() time.Time
	// FailureDomainLabel is the machine label that names a failure domain, as the
	// planner places managers by it (default planner.DefaultDomainLabel, "rack").
	FailureDomainLabel string
	// Power runs the machine page's power buttons (admins); nil: no buttons.
	Power Power
}

// Handler serves the pages.
type Handler struct {
	cfg    Config
	store  *state.Store
	log    *slog.Logger
	mux    *http.ServeMux
	pages  map[string]*template.Template
	live   *hub
	domain failureDomain
}

// New builds the handler.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Coalesce <= 0 {
		cfg.Coalesce = time.Second
	}
	if cfg.SessionTTL <= 0 || cfg.SessionTTL > MaxSession {
		cfg.SessionTTL = MaxSession
	}
	if cfg.Throttle == nil {
		cfg.Throttle = auth.NewThrottle(auth.ThrottleConfig{})
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, store: cfg.Backend.Store(), log: cfg.Logger.With("component", "status"),
		mux: http.NewServeMux(), pages: parsePages(), domain: newFailureDomain(cfg.FailureDomainLabel)}
	h.live = newHub(h.store, cfg.Coalesce, h.domain.Label)
	h.routes()
	return h
}

// Mounts returns the patterns to mount on the API server's mux: the pages, and a
// redirect from the bare root to the fleet page.
func (h *Handler) Mounts() map[string]http.Handler {
	return map[string]http.Handler{
		Prefix: h,
		"GET /{$}": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, Prefix, http.StatusSeeOther)
		}),
	}
}

func (h *Handler) routes() {
	static, _ := fs.Sub(files, "static")
	h.mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", http.FileServerFS(static)))
	h.mux.HandleFunc("GET "+Prefix+"login", h.loginForm)
	h.mux.HandleFunc("POST "+Prefix+"login", h.login)
	h.mux.HandleFunc("POST "+Prefix+"logout", h.withOperator(h.logout))
	h.mux.HandleFunc("GET "+Prefix+"{$}", h.withOperator(h.fleet))
	h.mux.HandleFunc("GET "+Prefix+"machines/{id}", h.withOperator(h.machine))
	h.mux.HandleFunc("POST "+Prefix+"machines/{id}/actions/{action}", h.withOperator(h.action))
	h.mux.HandleFunc("POST "+Prefix+"machines/{id}/power/{action}", h.withOperator(h.power))
	h.mux.HandleFunc("GET "+Prefix+"cluster", h.withOperator(h.cluster))
	h.mux.HandleFunc("GET "+Prefix+"roles", h.withOperator(h.roles))
	h.mux.HandleFunc("GET "+shared.PathLiveEvents, h.withOperator(h.events))
}

// Close ends the live event streams (call it before shutting the HTTP server down: open
// streams would hold it up). Pages keep working; new streams end at once.
func (h *Handler) Close() { h.live.close() }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	// Everything the pages load comes from this server; nothing may frame them.
	hdr.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "same-origin")
	h.mux.ServeHTTP(w, r)
}

// operator is who is looking at a page, and the form token their POSTs must carry.
type operator struct {
	auth.Principal
	CSRF    string
	bearer  string   // the token, when authenticated by header: no CSRF exposure
	session *session // the session, when authenticated by cookie
}

type operatorHandler func(w http.ResponseWriter, r *http.Request, op operator)

// withOperator lets logged-in operators (admin or viewer) through; others are sent to
// the login form (pages) or refused (the event stream and POSTs).
func (h *Handler) withOperator(next operatorHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		op, err := h.operator(r)
		var throttled throttledError
		switch {
		case errors.As(err, &throttled):
			secs := auth.RetryAfterSeconds(throttled.wait)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			http.Error(w, fmt.Sprintf("too many failed credentials from this address; try again in %d s", secs),
				http.StatusTooManyRequests)
			return
		case errors.Is(err, errDeadSession):
			clearCookie(w) // so the browser stops presenting it
		}
		if err != nil {
			if r.Method == http.MethodGet && r.URL.Path != shared.PathLiveEvents {
				http.Redirect(w, r, Prefix+"login?next="+template.URLQueryEscaper(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "log in with an operator token first", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		next(w, r, op)
	}
}

// page is what every page template gets besides its own data.
type page struct {
	Title  string
	Nav    string
	User   string
	Role   string
	CanAct bool
	CSRF   string
	Live   bool // the page subscribes to the event stream
	Now    time.Time
}

func (h *Handler) pageFor(op operator, title, nav string) page {
	return page{Title: title, Nav: nav, User: op.Name, Role: string(op.Kind), CanAct: op.IsAdmin(),
		CSRF: op.CSRF, Live: true, Now: time.Now().UTC()}
}

// render executes a page template into a buffer first, so a failing template gives a
// clean 500 instead of half a page.
func (h *Handler) render(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	if err := h.pages[name].ExecuteTemplate(&b, "base", data); err != nil {
		h.log.Error("rendering status page", "page", name, "err", err)
		http.Error(w, "rendering the page failed; see the coordinator's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func parsePages() map[string]*template.Template {
	base := template.Must(template.New("base").Funcs(funcs).ParseFS(files, "templates/base.tmpl"))
	pages := map[string]*template.Template{}
	for _, name := range []string{"fleet", "machine", "cluster", "roles", "login"} {
		pages[name] = template.Must(template.Must(base.Clone()).ParseFS(files, "templates/"+name+".tmpl"))
	}
	return pages
}

var funcs = template.FuncMap{
	"ago":   ago,
	"bytes": bytesText,
	"rate":  shared.HumanRate,
	"when":  func(t time.Time) string { return when(t) },
	"dur":   durText,
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	switch {
	case d < 2*time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func durText(from, to time.Time) string {
	if from.IsZero() {
		return "-"
	}
	if to.IsZero() {
		to = time.Now()
	}
	return to.Sub(from).Round(100 * time.Millisecond).String()
}

// bytesText formats the byte counts of the wire types, whatever their integer type.
func bytesText(v any) string {
	switch n := v.(type) {
	case int64:
		return shared.HumanBytes(n)
	case uint64:
		return shared.HumanBytes(int64(n))
	case int:
		return shared.HumanBytes(int64(n))
	}
	return fmt.Sprint(v)
}
