package state

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

func TestProtocolOnlyRises(t *testing.T) {
	s := New()
	if got := s.Protocol(); got != shared.FirstProtocol {
		t.Fatalf("a new store runs at protocol %d, want the first (%d)", got, shared.FirstProtocol)
	}
	now := time.Unix(1_700_000_000, 0).UTC()
	if _, err := s.ApplyRaiseProtocol(RaiseProtocol{To: 2, Time: now}, 1); err != nil {
		t.Fatal(err)
	}
	for _, to := range []int{2, 1, 0} {
		before, _ := s.Digest()
		_, err := s.ApplyRaiseProtocol(RaiseProtocol{To: to, Time: now}, 2)
		if KindOf(err) != KindConflict {
			t.Fatalf("raise to %d at protocol 2: got %v, want a conflict", to, err)
		}
		if after, _ := s.Digest(); after.SHA256 != before.SHA256 {
			t.Fatalf("a refused raise to %d changed the state", to)
		}
	}
	if got := s.Protocol(); got != 2 {
		t.Fatalf("protocol %d after the raise, want 2", got)
	}
}

// A coordinator that meets a raise past what it speaks is older than the cluster: it
// must stop, not apply the rest of the log with a different meaning.
func TestRaisePastOwnProtocolStops(t *testing.T) {
	s := New()
	defer func() {
		msg, _ := recover().(string)
		if !strings.Contains(msg, "upgrade it") {
			t.Fatalf("recovered %q, want a panic that says to upgrade", msg)
		}
	}()
	_, _ = s.ApplyRaiseProtocol(RaiseProtocol{To: shared.Protocol + 1}, 1)
	t.Fatal("a raise past this build's protocol was applied")
}

func TestNeedProtocolIsATypedConflict(t *testing.T) {
	err := NeedProtocol("state.Example", 3, 2)
	var r *Rejected
	if !errors.As(err, &r) || r.Kind != KindConflict || r.Rule != RuleProtocol {
		t.Fatalf("got %#v, want a conflict under RuleProtocol", err)
	}
	if !strings.Contains(r.Reason, "upgrade-check") {
		t.Fatalf("reason %q does not say what to do", r.Reason)
	}
}
