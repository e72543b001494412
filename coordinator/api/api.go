// Package api is the coordinator's HTTPS API: routing, authentication, the error
// envelope, and the handlers. Handlers validate input with shared's decoders and turn
// every write into one replicated command; business rules live in coordinator/state,
// where they run deterministically on every coordinator.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// The coordinator as the API needs it, one small interface per concern.

// Writer replicates a command (through the leader) and returns its result or its
// typed error (coordinator/state/errors.go); Kick asks the leader loop to plan now,
// after a write that changes what planning sees.
type Writer interface {
	Apply(ctx context.Context, cmd state.Command) (state.Result, error)
	Kick()
}

// Leader is the leader's side of write forwarding: a follower's batch of encoded
// commands in, the JSON outcomes and an HTTP status out (coordinator/forward).
type Leader interface {
	HandleInternalApply(ctx context.Context, data []byte) ([]byte, int)
}

// Cluster is the coordinators' membership.
type Cluster interface {
	Join(ctx context.Context, req shared.JoinRequest) error
	Members() shared.Members
	Snapshot() error
}

// Node is this coordinator's own view: its health and the gossip pool's key.
type Node interface {
	Health() shared.Health
	GossipInfo() shared.GossipInfo
}

// Planner answers dry runs (`rivet roles apply --dry-run`, `rivet plan show`).
type Planner interface {
	DryRun(roles []shared.Role, machines []*shared.Machine) []shared.RoleMatch
}

// Config configures the API.
type Config struct {
	Store    *state.Store // this coordinator's replica, which handlers read
	Writer   Writer
	Leader   Leader
	Cluster  Cluster
	Node     Node
	Planner  Planner // optional
	ImageDir string  // OS images served under /v1/images/
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// Pprof mounts Go's profiler at /debug/pprof/ for admin tokens.
	Pprof bool
	// Extra mounts more handlers on the same mux (status pages, boot files).
	Extra map[string]http.Handler
	// Throttle counts and slows bad tokens; share it with the status pages (default: the
	// API's own).
	Throttle *auth.Throttle
	// Admission is how this coordinator admits registering machines.
	Admission Admission
	// Power runs power commands (POST /v1/machines/{id}/power, /v1/power); nil: 503.
	Power Power
	// AgentBoot gives a re-imaged machine's installed agent what to kexec into; nil: 503.
	AgentBoot AgentBooter
}

// AgentBooter is the boot services' side of a kexec (netboot.Server.AgentBoot).
type AgentBooter interface {
	AgentBoot(ctx context.Context, mac net.HardwareAddr) (*shared.KexecAnswer, error)
}

// Admission is the registration policy (see docs/security.md).
type Admission struct {
	// Policy is shared.AdmitAuto to admit every machine that registers (--admit auto: the
	// lab's policy); otherwise ("" or shared.AdmitExpected) a machine is admitted only by
	// the operator's intent: it is expected, or approved.
	Policy string
	// MaxMachines refuses new machines beyond this many (0: no limit).
	MaxMachines int
	// RegisterRate and RegisterBurst limit registrations per credential (per enrolment
	// token; per source address for boot tickets). Zero rate: no limit.
	RegisterRate  float64
	RegisterBurst int
}

// API is the HTTP handler.
type API struct {
	cfg      Config
	store    *state.Store
	log      *slog.Logger
	mux      *http.ServeMux
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	progress progressGate // see progress.go
	// registrations limits registrations per credential (ratelimit.go).
	registrations *rateLimiter
	metrics       apiMetrics
}

type apiMetrics struct {
	conflicts            prometheus.Counter
	registrationsLimited prometheus.Counter
}

// New builds the API handler.
func New(cfg Config) *API {
	if cfg.Throttle == nil {
		cfg.Throttle = auth.NewThrottle(auth.ThrottleConfig{})
	}
	a := &API{cfg: cfg, store: cfg.Store, log: cfg.Logger, mux: http.NewServeMux()}
	a.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rivet_api_requests_total", Help: "API requests by route and status code."}, []string{"route", "code"})
	a.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "rivet_api_request_seconds", Help: "API request latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route"})
	a.registrations = newRateLimiter(cfg.Admission.RegisterRate, cfg.Admission.RegisterBurst)
	a.metrics = apiMetrics{
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "rivet_identity_conflicts_total",
			Help: "Registrations refused because they claimed another machine's id or MAC without its token."}),
		registrationsLimited: prometheus.NewCounter(prometheus.CounterOpts{Name: "rivet_registrations_limited_total",
			Help: "Registrations refused by the per-credential rate limit."}),
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(a.requests, a.latency, a.metrics.conflicts, a.metrics.registrationsLimited)
		a.mux.Handle("GET "+shared.PathMetrics, promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	}
	a.routes()
	if cfg.Pprof {
		a.handle("GET /debug/pprof/{name...}", a.pprof, allow(auth.KindAdmin))
	}
	for pattern, h := range cfg.Extra {
		a.mux.Handle(pattern, h)
	}
	return a
}

func (a *API) routes() {
	a.handle("POST "+shared.PathRegister, a.register, allow(auth.KindTicket, auth.KindEnrol, auth.KindAdmin, auth.KindMachine))
	a.handle("GET "+shared.PathExpected, a.listExpected, readers)
	a.handle("POST "+shared.PathExpected, a.importExpected, allow(auth.KindAdmin))
	a.handle("POST "+shared.PathLabels, a.setLabels, allow(auth.KindAdmin))
	a.handle("GET "+shared.PathMachines, a.listMachines, readers)
	a.handle("GET "+shared.PathMachine, a.getMachine, readersOrSelf)
	a.handle("GET "+shared.PathMachineEvents, a.getEvents, readersOrSelf)
	a.handle("GET "+shared.PathMachinePlan, a.getPlan, readersOrSelf)
	a.handle("POST "+shared.PathMachineReport, a.report, self)
	a.handle("POST "+shared.PathMachineCheckin, a.checkin, self)
	a.handle("PUT "+shared.PathMachineBoot, a.setBoot, selfOrAdmin)
	a.handle("GET "+shared.PathMachineSwarm, a.swarmJoin, self)
	a.handle("PUT "+shared.PathMachineSwarm, a.swarmReport, self)
	a.handle("GET "+shared.PathMachineSwarmOps, a.swarmOps, self)
	a.handle("POST "+shared.PathMachineSwarmOps+"/{op}", a.swarmOpDone, self)
	a.handle("POST "+shared.PathMachineKexec, a.kexec, self)
	a.handle("POST "+shared.PathMachineAction, a.action, allow(auth.KindAdmin))
	a.handle("POST "+shared.PathMachineReprovision, a.reprovision, allow(auth.KindAdmin))
	a.handle("GET "+shared.PathRoles, a.listRoles, readers)
	a.handle("POST "+shared.PathRoles, a.applyRoles, allow(auth.KindAdmin))
	a.handle("GET "+shared.PathRole, a.getRole, readers)
	a.handle("PUT "+shared.PathRole, a.putRole, allow(auth.KindAdmin))
	a.handle("DELETE "+shared.PathRole, a.deleteRole, allow(auth.KindAdmin))
	a.handle("GET "+shared.PathHealth, a.health, anyone)
	a.handle("GET "+shared.PathMembers, a.members, readers)
	a.handle("GET "+shared.PathTokens, a.listTokens, allow(auth.KindAdmin))
	a.handle("POST "+shared.PathTokens, a.createToken, allow(auth.KindAdmin))
	a.handle("DELETE "+shared.PathToken, a.deleteToken, allow(auth.KindAdmin))
	a.handle("POST "+shared.PathClusterJoin, a.join, allow(auth.KindAdmin, auth.KindInternal))
	a.handle("GET "+shared.PathClusterDigest, a.digest, readers)
	a.handle("POST "+shared.PathClusterSnapshot, a.snapshot, allow(auth.KindAdmin))
	a.handle("GET "+shared.PathGossip, a.gossip, allow(auth.KindMachine, auth.KindAdmin))
	a.handle("GET "+shared.PathImages+"{file...}", a.image, allow(auth.KindMachine, auth.KindAdmin, auth.KindViewer))
	a.handle("POST "+shared.PathInternalApply, a.internalApply, allow(auth.KindInternal))
	a.powerRoutes()
}

// ServeHTTP implements http.Handler. Every answer over TLS (API, status pages, images)
// tells browsers to use HTTPS only for this host from now on, and not to guess types.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS != nil {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	a.mux.ServeHTTP(w, r)
}

// handlerFunc is a handler that returns an error instead of writing one.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p auth.Principal) error

// guard decides whether a principal may call a route for the machine in the path.
type guard func(p auth.Principal, pathID shared.MachineID) bool

var (
	anyone  guard = func(auth.Principal, shared.MachineID) bool { return true }
	readers guard = func(p auth.Principal, _ shared.MachineID) bool { return p.CanRead() }
	self    guard = func(p auth.Principal, id shared.MachineID) bool {
		return p.Kind == auth.KindMachine && p.MachineID == id
	}
	readersOrSelf guard = func(p auth.Principal, id shared.MachineID) bool { return p.CanRead() || self(p, id) }
	selfOrAdmin   guard = func(p auth.Principal, id shared.MachineID) bool { return p.IsAdmin() || self(p, id) }
)

func allow(kinds ...auth.Kind) guard {
	return func(p auth.Principal, _ shared.MachineID) bool {
		for _, k := range kinds {
			if p.Kind == k {
				return true
			}
		}
		return false
	}
}

// statusWriter remembers the status code for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (a *API) handle(pattern string, h handlerFunc, g guard) {
	route := pattern
	limit := int64(shared.MaxBody)
	if pattern == "POST "+shared.PathInternalApply {
		limit = 16 << 20 // a follower's batch of forwarded commands
	}
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		p, err := a.authorize(sw, r, g)
		if err == nil {
			r.Body = http.MaxBytesReader(sw, r.Body, limit)
			err = h(sw, r, p)
		}
		if err != nil {
			writeError(sw, err)
		}
		a.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
		a.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		level := slog.LevelDebug
		if sw.status >= 500 {
			level = slog.LevelWarn
		}
		a.log.Log(r.Context(), level, "api request", "method", r.Method, "path", r.URL.Path,
			"status", sw.status, "principal", string(p.Kind), "ms", time.Since(start).Milliseconds())
	})
}

// authorize resolves the caller's token and checks the route's guard. A source (or an
// operator token) with too many bad tokens lately is answered 429 before its token is
// looked at; a bad token is counted and drains its buckets.
func (a *API) authorize(w http.ResponseWriter, r *http.Request, g guard) (auth.Principal, error) {
	bearer, hasToken := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	pathID := shared.MachineID(r.PathValue("id"))
	if !hasToken || bearer == "" {
		if g(auth.Principal{}, pathID) {
			return auth.Principal{}, nil
		}
		return auth.Principal{}, shared.Errorf(http.StatusUnauthorized, shared.CodeUnauthorized,
			"send `Authorization: Bearer TOKEN` (the CLI reads RIVET_TOKEN)", "this call needs a token")
	}
	keys, err := a.throttle(w, r, bearer)
	if err != nil {
		return auth.Principal{}, err
	}
	p, err := a.resolve(r.Context(), bearer)
	if errors.Is(err, auth.ErrBehind) && strings.HasPrefix(bearer, shared.TicketPrefix) {
		// Waited for replication and still unknown: spent, expired or never issued.
		a.cfg.Throttle.Fail(auth.SurfaceAPI, auth.ReasonUnknown, keys)
		return p, shared.Errorf(http.StatusUnauthorized, shared.CodeUnauthorized,
			"network-boot the machine again for a fresh ticket", "the boot ticket is unknown, spent or expired")
	}
	if errors.Is(err, auth.ErrBehind) {
		return p, shared.Errorf(http.StatusServiceUnavailable, shared.CodeNoLeader,
			"retry, or ask another coordinator", "%v", err)
	}
	if err != nil {
		a.cfg.Throttle.Fail(auth.SurfaceAPI, auth.ReasonOf(err), keys)
		return auth.Principal{}, shared.Errorf(http.StatusUnauthorized, shared.CodeUnauthorized,
			"create a token with `rivet tokens create`", "%v", err)
	}
	if !g(p, pathID) {
		return p, shared.Errorf(http.StatusForbidden, shared.CodeForbidden,
			"use a token with the right role (admin acts, viewer reads; a machine speaks only for itself)",
			"a %s token may not %s %s", p.Kind, r.Method, r.URL.Path)
	}
	return p, nil
}

// throttle names the buckets a failure of bearer drains, and refuses the call when one
// is empty. Coordinators' own forwarded writes are never held up by a neighbour's
// failures from the same address: the internal token is an HMAC of 256 bits, so letting
// its check through gives a guesser nothing (its failures still count and drain).
func (a *API) throttle(w http.ResponseWriter, r *http.Request, bearer string) ([]string, error) {
	id, _ := auth.StoredTokenID(bearer)
	keys := auth.Keys(a.store, r.RemoteAddr, id)
	if strings.HasPrefix(bearer, "rvi_") {
		return keys, nil
	}
	wait, ok := a.cfg.Throttle.Allow(auth.SurfaceAPI, keys)
	if ok {
		return keys, nil
	}
	secs := auth.RetryAfterSeconds(wait)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return nil, shared.Errorf(http.StatusTooManyRequests, shared.CodeRateLimited,
		fmt.Sprintf("wait %d s (Retry-After), then send a valid token", secs),
		"too many bad tokens from this address or for this token lately")
}

// behindWait bounds how long a follower waits to apply the write that issued a machine
// token before it sends the machine elsewhere; replication normally takes milliseconds.
const behindWait = 3 * time.Second

// resolve resolves a token, waiting for this coordinator to catch up when the token was
// issued by a write it has not applied yet: an agent that registered through another
// coordinator must not be told its brand-new token is unknown (it would register again).
func (a *API) resolve(ctx context.Context, bearer string) (auth.Principal, error) {
	deadline := time.Now().Add(behindWait)
	for {
		p, err := auth.Resolve(a.store, bearer)
		if !errors.Is(err, auth.ErrBehind) || time.Now().After(deadline) {
			return p, err
		}
		select {
		case <-ctx.Done():
			return p, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// writeError sends the error envelope (Answer chooses it).
func writeError(w http.ResponseWriter, err error) {
	apiErr := Answer(err)
	writeJSON(w, apiErr.Status, shared.ErrorBody{Error: *apiErr})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// pprof serves Go's profiles to admins (off unless --debug-pprof).
func (a *API) pprof(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	switch name := r.PathValue("name"); name {
	case "profile":
		pprof.Profile(w, r)
	case "trace":
		pprof.Trace(w, r)
	case "":
		pprof.Index(w, r)
	default:
		pprof.Handler(name).ServeHTTP(w, r)
	}
	return nil
}
