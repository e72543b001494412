package shared

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
)

// Client is a typed client for the coordinator API. It trusts exactly the cluster CA
// whose fingerprint it was given, and fails over between the coordinators it knows.
type Client struct {
	urls  []string
	token string
	http  *http.Client
	next  atomic.Uint32 // index of the URL that answered last
}

// ClientConfig configures a Client.
type ClientConfig struct {
	URLs          []string // coordinator base URLs, e.g. https://10.0.0.1:7443
	CAFingerprint string   // "sha256:<hex>" of the cluster CA certificate
	Token         string   // operator, enrolment or machine token
	Timeout       time.Duration
}

// NewClient returns a client for cfg.
func NewClient(cfg ClientConfig) (*Client, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("no coordinator URL: set --server or RIVET_SERVER (e.g. https://10.0.0.1:7443)")
	}
	for i, u := range cfg.URLs {
		parsed, err := url.Parse(u)
		if err != nil || parsed.Host == "" || (parsed.Scheme != "https" && parsed.Scheme != "http") {
			return nil, fmt.Errorf("coordinator URL %q: want https://host:port", u)
		}
		cfg.URLs[i] = strings.TrimRight(u, "/")
	}
	tlsConfig, err := PinnedTLSConfig(cfg.CAFingerprint)
	if err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	c := &Client{urls: cfg.URLs, token: cfg.Token, http: &http.Client{Transport: Transport(tlsConfig), Timeout: timeout}}
	// Start at a random coordinator: every agent is given the same list (rivet.url), and
	// starting at its head would put the whole fleet's connections on one coordinator.
	c.next.Store(uint32(rand.IntN(len(cfg.URLs))))
	return c, nil
}

// Transport is the HTTP transport of every Client: keep-alive HTTP/1.1 over tlsConfig.
// A machine makes one call at a time (and an image download beside it gets a connection
// of its own), so HTTP/2's multiplexing buys it nothing, while its framing, flow control
// and header compression cost the coordinator about a third more CPU per call and more
// memory per connection (rivet-bench store; BENCHMARKS.md).
func Transport(tlsConfig *tls.Config) *http.Transport {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	return &http.Transport{
		TLSClientConfig:     tlsConfig,
		Protocols:           protocols,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
}

// PinnedTLSConfig trusts exactly the CA with the given fingerprint: the server's chain
// must contain that CA, and the leaf must verify against it. Host names are not checked,
// since coordinators are reached by address and the pin is the trust.
func PinnedTLSConfig(fingerprint string) (*tls.Config, error) {
	if fingerprint == "" {
		return nil, errors.New("no CA fingerprint: set --ca-fingerprint or RIVET_CA_FINGERPRINT " +
			"(rivet coordinator prints it at start; it is also in DATA_DIR/operator.env)")
	}
	if err := ValidateFingerprint(fingerprint); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by VerifyConnection below: pinned CA, no host name
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs.PeerCertificates, fingerprint)
		},
	}, nil
}

// Fingerprint returns "sha256:<hex>" of a certificate's DER bytes.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func verifyPinned(chain []*x509.Certificate, fingerprint string) error {
	if len(chain) == 0 {
		return errors.New("server sent no certificate")
	}
	for _, cert := range chain {
		if Fingerprint(cert.Raw) != fingerprint || !cert.IsCA {
			continue
		}
		roots := x509.NewCertPool()
		roots.AddCert(cert)
		_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			return fmt.Errorf("server certificate does not verify against the pinned CA: %w", err)
		}
		return nil
	}
	return fmt.Errorf("server's certificate chain has no CA with the pinned fingerprint %s: a different "+
		"cluster, a wrong --ca-fingerprint, or a server that does not send its CA certificate", fingerprint)
}

// WithToken returns a copy of c that sends another token.
func (c *Client) WithToken(token string) *Client {
	w := &Client{urls: c.urls, token: token, http: c.http}
	w.next.Store(c.next.Load())
	return w
}

// HTTPClient is the pinned HTTP client, for streaming downloads (images, boot files).
func (c *Client) HTTPClient() *http.Client { return c.http }

// Do sends one request and decodes the answer into out (when out is not nil). A non-2xx
// answer comes back as *APIError. It moves on to the next coordinator only when the
// request certainly changed nothing: a read; a request that failed before it was
// written; an answer no_leader (a minority cut off by a partition) or not_applied. A
// write whose outcome is unknown (outcome_unknown, or the connection lost after the
// request went out) is never resent: the caller gets the error and reads first.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	var lastErr error
	start := int(c.next.Load())
	for i := range c.urls {
		idx := (start + i) % len(c.urls)
		err := c.doOnce(ctx, c.urls[idx], method, path, body, in != nil, out)
		if err == nil || !resendable(method, err) || ctx.Err() != nil {
			c.next.Store(uint32(idx))
			return err
		}
		lastErr = err
	}
	return fmt.Errorf("no coordinator answered (tried %s): %w", strings.Join(c.urls, ", "), lastErr)
}

// errUnsent marks a transport failure before the request was written.
var errUnsent = errors.New("request not sent")

// resendable says whether a failed request may go to the next coordinator.
func resendable(method string, err error) bool {
	switch CodeOf(err) {
	case CodeNoLeader, CodeNotApplied:
		return true
	case "":
		// A transport failure: a read is safe to repeat; a write only if it never left.
		return method == http.MethodGet || method == http.MethodHead || errors.Is(err, errUnsent)
	}
	return false
}

func (c *Client) doOnce(ctx context.Context, base, method, path string, body []byte, hasBody bool, out any) error {
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(body)
	}
	req, wrote, err := c.newRequest(ctx, method, base+path, rd)
	if err != nil {
		return err
	}
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if !wrote.Load() {
			return fmt.Errorf("%w: %w", errUnsent, err)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeAPIError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	// The JSON v2 decoder, as for requests (decode.go); answers may carry fields this
	// client does not know yet, so unknown names are ignored here.
	if err := jsonv2.UnmarshalRead(io.LimitReader(resp.Body, 64<<20), out); err != nil {
		return fmt.Errorf("decoding %s %s answer: %w", method, path, err)
	}
	return nil
}

// newRequest is a request with the client's token, and a flag set once the request has
// been written whole (a failure before that is errUnsent: it certainly changed nothing).
func (c *Client) newRequest(ctx context.Context, method, url string, body io.Reader) (*http.Request, *atomic.Bool, error) {
	wrote := &atomic.Bool{}
	trace := &httptrace.ClientTrace{WroteRequest: func(info httptrace.WroteRequestInfo) {
		if info.Err == nil {
			wrote.Store(true)
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, url, body)
	if err != nil {
		return nil, nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, wrote, nil
}

func decodeAPIError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, MaxSmallBody))
	var env ErrorBody
	if err := json.Unmarshal(data, &env); err != nil || env.Error.Message == "" {
		return &APIError{Status: resp.StatusCode, Code: CodeInternal,
			Message: fmt.Sprintf("unexpected answer: %s", strings.TrimSpace(string(data)))}
	}
	env.Error.Status = resp.StatusCode
	return &env.Error
}

// Register enrols the machine; c must carry an enrolment (or admin) token.
func (c *Client) Register(ctx context.Context, req *RegisterRequest) (*RegisterResponse, error) {
	var resp RegisterResponse
	return &resp, c.Do(ctx, http.MethodPost, PathRegister, req, &resp)
}

// Checkin tells the coordinator the agent is up; it answers the machine's summary.
func (c *Client) Checkin(ctx context.Context, id MachineID, req *CheckinRequest) (*MachineSummary, error) {
	var m MachineSummary
	return &m, c.Do(ctx, http.MethodPost, MachinePath(PathMachineCheckin, id), req, &m)
}

// Plan returns the machine's plan and step states.
func (c *Client) Plan(ctx context.Context, id MachineID) (*PlanView, error) {
	var p PlanView
	return &p, c.Do(ctx, http.MethodGet, MachinePath(PathMachinePlan, id), nil, &p)
}

// Report records a step's progress or result.
func (c *Client) Report(ctx context.Context, id MachineID, r *StepReport) error {
	return c.Do(ctx, http.MethodPost, MachinePath(PathMachineReport, id), r, nil)
}

// SetBoot records the machine's next network-boot answer.
func (c *Client) SetBoot(ctx context.Context, id MachineID, boot BootTarget) error {
	return c.Do(ctx, http.MethodPut, MachinePath(PathMachineBoot, id), &BootRequest{Boot: boot}, nil)
}

// SwarmJoin fetches how this machine joins the Swarm (with its secret token).
func (c *Client) SwarmJoin(ctx context.Context, id MachineID) (*SwarmJoin, error) {
	var j SwarmJoin
	return &j, c.Do(ctx, http.MethodGet, MachinePath(PathMachineSwarm, id), nil, &j)
}

// SwarmReport records the node's swarm identity (and, from the first manager, the
// tokens); the answer may ask a manager to rotate the manager join token.
func (c *Client) SwarmReport(ctx context.Context, id MachineID, r *SwarmReport) (*SwarmReportAnswer, error) {
	var a SwarmReportAnswer
	return &a, c.Do(ctx, http.MethodPut, MachinePath(PathMachineSwarm, id), r, &a)
}

// Gossip returns the gossip key and the coordinators' gossip addresses.
func (c *Client) Gossip(ctx context.Context) (*GossipInfo, error) {
	var g GossipInfo
	return &g, c.Do(ctx, http.MethodGet, PathGossip, nil, &g)
}

// Machines lists every machine.
func (c *Client) Machines(ctx context.Context) ([]MachineSummary, error) {
	var ms []MachineSummary
	return ms, c.Do(ctx, http.MethodGet, PathMachines, nil, &ms)
}

// Machine returns one machine.
func (c *Client) Machine(ctx context.Context, id MachineID) (*Machine, error) {
	var m Machine
	return &m, c.Do(ctx, http.MethodGet, MachinePath(PathMachine, id), nil, &m)
}

// Events returns a machine's timeline.
func (c *Client) Events(ctx context.Context, id MachineID) ([]Event, error) {
	var evs []Event
	return evs, c.Do(ctx, http.MethodGet, MachinePath(PathMachineEvents, id), nil, &evs)
}

// Action takes an operator action on a machine.
func (c *Client) Action(ctx context.Context, id MachineID, action Action, reason string) (*Machine, error) {
	var m Machine
	return &m, c.Do(ctx, http.MethodPost, MachinePath(PathMachineAction, id, action), &ActionRequest{Reason: reason}, &m)
}

// ImportExpected imports expected machines (admin): all rows or none.
func (c *Client) ImportExpected(ctx context.Context, req *ImportRequest) (*ImportResponse, error) {
	var out ImportResponse
	return &out, c.Do(ctx, http.MethodPost, PathExpected, req, &out)
}

// Expected lists the expected machines.
func (c *Client) Expected(ctx context.Context) ([]ExpectedMachine, error) {
	var out []ExpectedMachine
	return out, c.Do(ctx, http.MethodGet, PathExpected, nil, &out)
}

// MachinesWithExpected lists every machine and, in state expected, every imported row
// no machine has matched yet (their ID is empty, their Key names the row).
func (c *Client) MachinesWithExpected(ctx context.Context) ([]MachineSummary, error) {
	var ms []MachineSummary
	return ms, c.Do(ctx, http.MethodGet, PathMachines+"?expected=1", nil, &ms)
}

// SetLabels sets and removes operator labels (admin): on every target or none.
func (c *Client) SetLabels(ctx context.Context, req *LabelRequest) (*LabelResponse, error) {
	var out LabelResponse
	return &out, c.Do(ctx, http.MethodPost, PathLabels, req, &out)
}

// Roles lists the roles.
func (c *Client) Roles(ctx context.Context) ([]Role, error) {
	var rs []Role
	return rs, c.Do(ctx, http.MethodGet, PathRoles, nil, &rs)
}

// ApplyRoles creates or replaces the given roles; with dryRun nothing changes and the
// answer says what would happen.
func (c *Client) ApplyRoles(ctx context.Context, roles *RoleList, dryRun bool) (*ApplyResult, error) {
	path := PathRoles
	if dryRun {
		path += "?dry_run=1"
	}
	var res ApplyResult
	return &res, c.Do(ctx, http.MethodPost, path, roles, &res)
}

// DeleteRole removes a role.
func (c *Client) DeleteRole(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, strings.Replace(PathRole, "{name}", name, 1), nil, nil)
}

// Health returns the coordinator's health.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var h Health
	return &h, c.Do(ctx, http.MethodGet, PathHealth, nil, &h)
}

// Members returns the Raft peers and the Serf pool.
func (c *Client) Members(ctx context.Context) (*Members, error) {
	var m Members
	return &m, c.Do(ctx, http.MethodGet, PathMembers, nil, &m)
}

// Digest returns the digest of the whole replicated state.
func (c *Client) Digest(ctx context.Context) (*Digest, error) {
	var d Digest
	return &d, c.Do(ctx, http.MethodGet, PathClusterDigest, nil, &d)
}

// Snapshot asks the coordinator that answers to take a Raft snapshot now.
func (c *Client) Snapshot(ctx context.Context) (*Digest, error) {
	var d Digest
	return &d, c.Do(ctx, http.MethodPost, PathClusterSnapshot, nil, &d)
}

// CreateToken creates a token; the answer is the only place its secret appears.
func (c *Client) CreateToken(ctx context.Context, req *TokenRequest) (*TokenCreated, error) {
	var t TokenCreated
	return &t, c.Do(ctx, http.MethodPost, PathTokens, req, &t)
}

// Tokens lists tokens without their secrets.
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var ts []TokenInfo
	return ts, c.Do(ctx, http.MethodGet, PathTokens, nil, &ts)
}

// DeleteToken revokes a token.
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, strings.Replace(PathToken, "{id}", id, 1), nil, nil)
}

// Join asks the cluster to add a coordinator as a voter.
func (c *Client) Join(ctx context.Context, req *JoinRequest) error {
	return c.Do(ctx, http.MethodPost, PathClusterJoin, req, nil)
}

// ApplyResult says what applying roles did (or, in a dry run, would do).
type ApplyResult struct {
	DryRun  bool        `json:"dry_run"`
	Created []string    `json:"created,omitempty"`
	Updated []string    `json:"updated,omitempty"`
	Matches []RoleMatch `json:"matches,omitempty"` // what the planner would do with discovered machines
}

// RoleMatch is the planner's verdict for one machine.
type RoleMatch struct {
	MachineID MachineID `json:"machine_id"`
	Role      string    `json:"role,omitempty"`
	Swarm     string    `json:"swarm,omitempty"`
	SwarmInit bool      `json:"swarm_init,omitempty"` // the planner designates it to create the swarm
	Problem   string    `json:"problem,omitempty"`    // no role, or more than one
}

// Open sends a GET for path (for example an image under PathImages) and returns the
// response for streaming; extra headers (such as Range) are added. The caller closes the
// body. A non-2xx answer is returned as *APIError.
func (c *Client) Open(ctx context.Context, path string, header http.Header) (*http.Response, error) {
	var lastErr error
	start := int(c.next.Load())
	for i := range c.urls {
		idx := (start + i) % len(c.urls)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.urls[idx]+path, nil)
		if err != nil {
			return nil, err
		}
		for k, vs := range header {
			req.Header[k] = vs
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		// Streams run for minutes: no client-wide timeout, the context bounds them.
		streaming := &http.Client{Transport: c.http.Transport}
		resp, err := streaming.Do(req)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				return nil, err
			}
			continue
		}
		if resp.StatusCode/100 != 2 {
			defer resp.Body.Close()
			return nil, decodeAPIError(resp)
		}
		c.next.Store(uint32(idx))
		return resp, nil
	}
	return nil, fmt.Errorf("no coordinator answered GET %s: %w", path, lastErr)
}

// URLs returns the coordinator base URLs the client knows.
func (c *Client) URLs() []string { return append([]string(nil), c.urls...) }
