package coordinator

import (
	"slices"
	"testing"

	"github.com/rivetmetal/rivet/coordinator/fsm"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

func TestRaiseTarget(t *testing.T) {
	v := func(id string, protocol int) peerVersion { return peerVersion{ID: id, Protocol: protocol} }
	gone := peerVersion{ID: "c3", Unreachable: "connection refused"}
	for _, tc := range []struct {
		name    string
		peers   []peerVersion
		have    int
		to      int
		waiting []string
	}{
		{"all new", []peerVersion{v("c1", 2), v("c2", 2), v("c3", 2)}, 1, 2, nil},
		{"one old", []peerVersion{v("c1", 2), v("c2", 1), v("c3", 2)}, 1, 0, []string{"c2 (protocol 1)"}},
		{"one unreachable", []peerVersion{v("c1", 2), v("c2", 2), gone}, 1, 0, []string{"c3 (unreachable: connection refused)"}},
		{"already raised", []peerVersion{v("c1", 2), v("c2", 2)}, 2, 0, []string{"c1 (protocol 2)", "c2 (protocol 2)"}},
		{"to the lowest", []peerVersion{v("c1", 3), v("c2", 2)}, 1, 2, nil},
		{"no members", nil, 1, 0, nil},
	} {
		to, waiting := raiseTarget(tc.peers, tc.have)
		if to != tc.to || !slices.Equal(waiting, tc.waiting) {
			t.Errorf("%s: raiseTarget = %d %q, want %d %q", tc.name, to, waiting, tc.to, tc.waiting)
		}
	}
}

func TestProtocolGate(t *testing.T) {
	newer := func(cmd state.Command) (int, error) {
		if _, ok := cmd.(state.PutRole); ok {
			return shared.Protocol + 1, nil // as a type a later release adds
		}
		return fsm.Since(cmd)
	}
	if err := protocolGate(state.PutRole{}, shared.Protocol, newer); state.KindOf(err) != state.KindConflict {
		t.Fatalf("a command newer than the cluster: %v, want a conflict", err)
	}
	if err := protocolGate(state.PutRole{}, shared.Protocol+1, newer); err != nil {
		t.Fatalf("a command of the cluster's protocol: %v", err)
	}
	if err := protocolGate(state.Register{}, shared.FirstProtocol, newer); err != nil {
		t.Fatalf("a first-release command in a first-release cluster: %v", err)
	}
	// The raise is what moves the cluster on: it must pass at the protocol it leaves.
	if err := protocolGate(state.RaiseProtocol{To: 2}, shared.FirstProtocol, fsm.Since); err != nil {
		t.Fatalf("RaiseProtocol at the first protocol: %v", err)
	}
}
