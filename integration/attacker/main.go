// Command attacker is the hostile peer of the boot-network attack test
// (integration/attack_test.go). It runs in a network namespace of its own on the same
// bridge as the coordinators and the victims, with only what a machine on that network
// can have: the coordinators' addresses, the CA fingerprint the boot script prints, its
// own MAC, the victims' MACs and ids (on the wire, or readable by a viewer), and a status
// cookie the operator has logged out. It tries every attack it knows once and prints one
// JSON line per attack: whether it was sent, what the coordinator answered, and whether
// it succeeded. It changes nothing itself when every attack fails; the test checks that.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp/dhcptest"
	"github.com/rivetmetal/rivet/shared"
)

// Target is what the attacker knows; the test writes it as JSON.
type Target struct {
	Coordinators  []Coordinator `json:"coordinators"`
	CAFingerprint string        `json:"ca_fingerprint"`
	Iface         string        `json:"iface"` // the attacker's NIC on the boot network
	Victims       []Victim      `json:"victims"`
	// A status-page session the operator has logged out, with the form token its page carried.
	Cookie string `json:"cookie"`
	CSRF   string `json:"csrf"`
}

// Coordinator is one coordinator's addresses.
type Coordinator struct {
	API      string `json:"api"`       // https://ip:port
	Raft     string `json:"raft"`      // ip:port
	BootHTTP string `json:"boot_http"` // http://ip:port
}

// Victim is a machine the attacker wants to become.
type Victim struct {
	ID   shared.MachineID `json:"id"`
	UUID string           `json:"uuid"`
	MAC  string           `json:"mac"`
	// Recorded: the victim's record holds this MAC (a hardware NIC), so a registration
	// that lists it claims the victim. A veth is no hardware and belongs to no record.
	Recorded bool `json:"recorded"`
}

// Result is one attack's outcome.
type Result struct {
	Attack    string `json:"attack"`
	Sent      bool   `json:"sent"`
	Answer    string `json:"answer"` // status and message, or the transport's error
	Succeeded bool   `json:"succeeded"`
}

func main() {
	path := flag.String("target", "", "JSON file describing the target (see Target)")
	flag.Parse()
	data, err := os.ReadFile(*path)
	if err != nil {
		fatal(err)
	}
	var tg Target
	if err := json.Unmarshal(data, &tg); err != nil {
		fatal(err)
	}
	a, err := newAttacker(tg)
	if err != nil {
		fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a.run(ctx)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "attacker:", err)
	os.Exit(2)
}

type attacker struct {
	tg   Target
	mac  net.HardwareAddr
	ip   net.IP
	http *http.Client // the boot network's plain HTTP (scripts)
	out  *json.Encoder
}

func newAttacker(tg Target) (*attacker, error) {
	ifc, err := net.InterfaceByName(tg.Iface)
	if err != nil {
		return nil, err
	}
	addrs, err := ifc.Addrs()
	if err != nil || len(addrs) == 0 {
		return nil, fmt.Errorf("%s has no address", tg.Iface)
	}
	ip, _, _ := net.ParseCIDR(addrs[0].String())
	return &attacker{tg: tg, mac: ifc.HardwareAddr, ip: ip, out: json.NewEncoder(os.Stdout),
		http: &http.Client{Timeout: 10 * time.Second}}, nil
}

func (a *attacker) report(r Result) { _ = a.out.Encode(r) }

func (a *attacker) run(ctx context.Context) {
	for _, c := range a.tg.Coordinators {
		a.report(a.raftWithoutCertificate(c))
		for _, v := range a.tg.Victims {
			a.report(a.scriptFor(c, v.MAC, "script for victim MAC "+v.MAC+" from "+c.BootHTTP))
		}
	}
	api := a.tg.Coordinators[0].API
	for _, v := range a.tg.Victims {
		a.report(a.register(ctx, "re-register victim "+string(v.ID)+" by UUID", inventory(v.UUID, a.mac.String(), 0)))
		if v.Recorded {
			steal := inventory(newUUID(), a.mac.String(), 0)
			steal.NICs = append(steal.NICs, shared.NIC{Name: "eth1", MAC: v.MAC, Link: true, PCIAddress: "0000:00:04.0"})
			a.report(a.register(ctx, "register a new machine that also has victim "+string(v.ID)+"'s MAC", steal))
		}
	}
	// A real ticket of its own, then the same ticket twice: the second is a replay.
	own := newUUID()
	ticket := a.ticket(ctx)
	first := a.registerWith(ctx, ticket, "register itself (a fake machine)", inventory(own, a.mac.String(), 0), false)
	a.report(first.Result)
	a.report(a.registerWith(ctx, ticket, "replay the spent ticket", inventory(own, a.mac.String(), 0), true).Result)
	a.report(a.registerWith(ctx, a.ticket(ctx), "inflated inventory (1 MiB of empty partitions)",
		inventory(newUUID(), a.mac.String(), 87000), true).Result)
	if first.token != "" {
		a.machineAttacks(ctx, api, first.id, first.token)
	}
	for _, c := range a.tg.Coordinators {
		a.report(a.loggedOutCookie(c.API))
	}
}

// raftWithoutCertificate sends one AppendEntries carrying a PutToken command (an admin
// token the attacker knows) to the Raft port, as a plain hashicorp/raft peer would.
func (a *attacker) raftWithoutCertificate(c Coordinator) Result {
	r := Result{Attack: "raft AppendEntries without a certificate to " + c.Raft}
	trans, err := raft.NewTCPTransport(net.JoinHostPort(a.ip.String(), "0"), nil, 1, 5*time.Second, io.Discard)
	if err != nil {
		r.Answer = "no transport: " + err.Error()
		return r
	}
	defer trans.Close()
	sum := sha256.Sum256([]byte("attacker-secret"))
	cmd := append([]byte{13}, fmt.Sprintf(`{"token":{"id":"evil01","name":"evil","role":"admin","secret_hash":%q,"created_at":"2026-01-01T00:00:00Z"}}`,
		hex.EncodeToString(sum[:]))...)
	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax,
		ID: []byte("evil"), Addr: []byte(trans.LocalAddr())},
		Term: 1 << 40, LeaderCommitIndex: 1 << 40,
		Entries: []*raft.Log{{Index: 1 << 30, Term: 1 << 40, Type: raft.LogCommand, Data: cmd}}}
	var resp raft.AppendEntriesResponse
	r.Sent = true
	if err := trans.AppendEntries("c1", raft.ServerAddress(c.Raft), req, &resp); err != nil {
		r.Answer = "refused: " + err.Error()
		return r
	}
	r.Answer = fmt.Sprintf("answered: success=%v term=%d", resp.Success, resp.Term)
	r.Succeeded = true // any answer at all means the RPC was read
	return r
}

var ticketRe = regexp.MustCompile(`rivet\.(ticket|token)=(\S+)`)

// scriptFor asks for a machine's iPXE script, after a PXE DHCP request in that MAC's
// name (so the boot services have "seen" it); the attack succeeds if the script carries
// any credential.
func (a *attacker) scriptFor(c Coordinator, mac, name string) Result {
	r := Result{Attack: name, Sent: true}
	if hw, err := net.ParseMAC(mac); err == nil {
		a.pxeRequest(hw)
	}
	resp, err := a.http.Get(c.BootHTTP + "/boot.ipxe?mac=" + url.QueryEscape(mac))
	if err != nil {
		r.Answer = err.Error()
		return r
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	m := ticketRe.FindSubmatch(body)
	r.Answer = fmt.Sprintf("HTTP %d, %d bytes, credential in script: %v", resp.StatusCode, len(body), m != nil)
	r.Succeeded = m != nil
	return r
}

// ticket gets a boot ticket for the attacker's own MAC the way a machine does: a PXE
// DHCP exchange, then the script from its own address. It is not an attack (any machine
// may register; it gets nothing until admitted); it arms the ones that need a ticket.
func (a *attacker) ticket(ctx context.Context) string {
	a.pxeRequest(a.mac)
	for _, c := range a.tg.Coordinators {
		resp, err := a.http.Get(c.BootHTTP + "/boot.ipxe?mac=" + url.QueryEscape(a.mac.String()))
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if m := ticketRe.FindSubmatch(body); m != nil && string(m[1]) == "ticket" {
			return string(m[2])
		}
	}
	return shared.TicketPrefix + strings.Repeat("0", 48) // none given: a forged one
}

// pxeRequest broadcasts a PXE firmware's DHCPDISCOVER with chaddr mac and waits a
// moment for an offer.
func (a *attacker) pxeRequest(mac net.HardwareAddr) {
	cl, err := dhcptest.NewClient(a.tg.Iface, net.IPv4zero, 68)
	if err != nil {
		return
	}
	defer cl.Close()
	xid := uint32(time.Now().UnixNano())
	_ = cl.Send(dhcptest.Request{MAC: mac, XID: xid, PXE: true, Arch: 0}.Bytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67})
	_, _, _ = cl.Receive(xid, 2*time.Second)
}

type registered struct {
	Result
	id    shared.MachineID
	token string
}

// register tries a claim with a fresh ticket of the attacker's own.
func (a *attacker) register(ctx context.Context, name string, inv shared.Inventory) Result {
	return a.registerWith(ctx, a.ticket(ctx), name, inv, true).Result
}

// registerWith registers inv with a ticket. attack says whether success is the attack
// succeeding (a fake machine registering itself, unadmitted, is allowed).
func (a *attacker) registerWith(ctx context.Context, ticket, name string, inv shared.Inventory, attack bool) registered {
	r := registered{Result: Result{Attack: name, Sent: true}}
	body, _ := json.Marshal(shared.RegisterRequest{Inventory: inv, Mode: shared.ModeRAM, Version: "evil"})
	var resp shared.RegisterResponse
	status, answer := a.call(ctx, a.tg.Coordinators[0].API, http.MethodPost, shared.PathRegister, ticket, body, &resp)
	r.Answer = answer
	if status == http.StatusOK {
		r.id, r.token = resp.Machine.ID, resp.MachineToken
		r.Succeeded = attack
		if !attack && (resp.Machine.Admitted || resp.Gossip.Key != "") {
			r.Succeeded, r.Answer = true, "a fake machine was admitted or given the gossip key"
		}
	}
	return r
}

// machineAttacks use the fake machine's own (genuine) token against the victims and
// the Swarm.
func (a *attacker) machineAttacks(ctx context.Context, api string, id shared.MachineID, token string) {
	try := func(name, method, path string, body any, ok func(int) bool) {
		b, _ := json.Marshal(body)
		if body == nil {
			b = nil
		}
		status, answer := a.call(ctx, api, method, path, token, b, nil)
		a.report(Result{Attack: name, Sent: true, Answer: answer, Succeeded: ok(status)})
	}
	success := func(s int) bool { return s >= 200 && s < 300 }
	try("fetch the gossip key as an unadmitted machine", http.MethodGet, shared.PathGossip, nil, success)
	try("race for swarm init / fetch join tokens", http.MethodGet, shared.MachinePath(shared.PathMachineSwarm, id), nil, success)
	try("report a swarm with a foreign manager address", http.MethodPut, shared.MachinePath(shared.PathMachineSwarm, id),
		shared.SwarmReport{NodeID: "evilnode", ClusterID: "evilcluster", ManagerToken: "SWMTKN-1-evil-manager",
			WorkerToken: "SWMTKN-1-evil-worker", Addr: "10.66.66.66:2377"}, success)
	for _, v := range a.tg.Victims {
		try("report victim "+string(v.ID)+"'s step failed", http.MethodPost, shared.MachinePath(shared.PathMachineReport, v.ID),
			shared.StepReport{Generation: 1, Step: "swarm", Status: shared.StepFailed, Attempt: 1, Error: "evil"}, success)
		try("switch victim "+string(v.ID)+"'s boot to the agent", http.MethodPut, shared.MachinePath(shared.PathMachineBoot, v.ID),
			shared.BootRequest{Boot: shared.BootAgent}, success)
		try("read victim "+string(v.ID)+"'s plan", http.MethodGet, shared.MachinePath(shared.PathMachinePlan, v.ID), nil, success)
	}
}

// loggedOutCookie replays the operator's logged-out session: a page read and an action.
func (a *attacker) loggedOutCookie(api string) Result {
	r := Result{Attack: "replay a logged-out status cookie at " + api, Sent: true}
	cl := a.apiClient()
	req, _ := http.NewRequest(http.MethodPost, api+"/status/machines/"+string(a.tg.Victims[0].ID)+"/actions/retire",
		strings.NewReader(url.Values{"csrf": {a.tg.CSRF}, "reason": {"evil"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Cookie", a.tg.Cookie)
	req.Header.Set("Origin", api)
	resp, err := cl.Do(req)
	if err != nil {
		r.Answer = err.Error()
		return r
	}
	resp.Body.Close()
	r.Answer = fmt.Sprintf("HTTP %d", resp.StatusCode)
	r.Succeeded = resp.StatusCode < 300 || resp.StatusCode == http.StatusSeeOther && !strings.Contains(resp.Header.Get("Location"), "login")
	return r
}

// call sends one API request with a bearer token and returns the status and a short
// description of the answer.
func (a *attacker) call(ctx context.Context, api, method, path, token string, body []byte, out any) (int, string) {
	req, _ := http.NewRequestWithContext(ctx, method, api+path, bytes.NewReader(body))
	if body == nil {
		req, _ = http.NewRequestWithContext(ctx, method, api+path, nil)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.apiClient().Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if out != nil && resp.StatusCode == http.StatusOK {
		_ = json.Unmarshal(data, out)
	}
	var e shared.ErrorBody
	_ = json.Unmarshal(data, &e)
	return resp.StatusCode, fmt.Sprintf("HTTP %d %s %s", resp.StatusCode, e.Error.Code, e.Error.Message)
}

// apiClient pins the cluster CA as a machine does, and never follows redirects.
func (a *attacker) apiClient() *http.Client {
	c, err := shared.NewClient(shared.ClientConfig{URLs: []string{a.tg.Coordinators[0].API}, CAFingerprint: a.tg.CAFingerprint})
	if err != nil {
		fatal(err)
	}
	h := *c.HTTPClient()
	h.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &h
}

// inventory is a minimal machine with one NIC and, for the inflation attack, parts
// empty partitions on its one disk.
func inventory(uuid, mac string, parts int) shared.Inventory {
	inv := shared.Inventory{System: shared.System{UUID: uuid, Vendor: "Evil", Product: "Box"},
		NICs:  []shared.NIC{{Name: "eth0", MAC: mac, Link: true, PCIAddress: "0000:00:03.0"}},
		Disks: []shared.Disk{{Name: "vda", SizeBytes: 1 << 34, Serial: "EVIL"}}}
	if parts > 0 {
		inv.Disks[0].Partitions = make([]shared.Partition, parts)
	}
	return inv
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-8" + h[17:20] + "-" + h[20:32]
}
