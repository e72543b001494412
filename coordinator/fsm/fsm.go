// Package fsm is the coordinator's Raft state machine. A command is one type byte followed
// by its JSON body; the enum below is append-only: a number, once used, keeps its meaning
// forever, because old log entries and snapshots are replayed with it.
package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/coordinator/state"
)

// Type is a command's type byte.
type Type uint8

// The command enum. Append only; never renumber or reuse.
const (
	TypeInitCluster       Type = 1
	TypePutCoordinator    Type = 2
	TypeRemoveCoordinator Type = 3
	TypeRegister          Type = 4
	TypeCheckin           Type = 5
	TypeSetPlan           Type = 6
	TypeReport            Type = 7
	TypeSetBoot           Type = 8
	TypeGossip            Type = 9
	TypeAction            Type = 10
	TypePutRole           Type = 11
	TypeDeleteRole        Type = 12
	TypePutToken          Type = 13
	TypeDeleteToken       Type = 14
	TypeSwarmClaim        Type = 15
	TypeSwarmReport       Type = 16
	TypeSetPlans          Type = 17
	TypeIssueTicket       Type = 18
	TypePutExpected       Type = 19
	TypeEndSessions       Type = 20
	TypeSwarmJoin         Type = 21
	TypeSetLabels         Type = 22
	// Power commands (coordinator/powerctl): a power command and the BMC's answer, and
	// the leader's recovery attempts.
	TypePowerRecord  Type = 23
	TypePowerRecover Type = 24
	// Protocol 2 (shared.Protocol): the cluster's protocol itself, and day-two swarm
	// operations.
	TypeRaiseProtocol Type = 25
	TypeSwarmOpStart  Type = 26
	TypeSwarmOpDone   Type = 27
	TypeReprovision   Type = 28
)

// sinceProtocol is the protocol that introduced each command type newer than the first
// (every type not listed here is of shared.FirstProtocol). A type is written only once
// the cluster runs at its protocol; add a type here with shared.Protocol raised by one.
var sinceProtocol = map[Type]int{
	TypeRaiseProtocol: 2,
	TypeSwarmOpStart:  2,
	TypeSwarmOpDone:   2,
	TypeReprovision:   2,
}

// Since is the cluster protocol a command needs before it may be written.
func Since(cmd state.Command) (int, error) {
	t, err := typeOf(cmd)
	if err != nil {
		return 0, err
	}
	if p, ok := sinceProtocol[t]; ok {
		return p, nil
	}
	return 1, nil
}

// typeOf maps a command to its type byte; Encode uses it.
func typeOf(cmd state.Command) (Type, error) {
	switch cmd.(type) {
	case state.InitCluster:
		return TypeInitCluster, nil
	case state.PutCoordinator:
		return TypePutCoordinator, nil
	case state.RemoveCoordinator:
		return TypeRemoveCoordinator, nil
	case state.Register:
		return TypeRegister, nil
	case state.Checkin:
		return TypeCheckin, nil
	case state.SetPlan:
		return TypeSetPlan, nil
	case state.Report:
		return TypeReport, nil
	case state.SetBoot:
		return TypeSetBoot, nil
	case state.Gossip:
		return TypeGossip, nil
	case state.Action:
		return TypeAction, nil
	case state.PutRole:
		return TypePutRole, nil
	case state.DeleteRole:
		return TypeDeleteRole, nil
	case state.PutToken:
		return TypePutToken, nil
	case state.DeleteToken:
		return TypeDeleteToken, nil
	case state.SwarmClaim:
		return TypeSwarmClaim, nil
	case state.SwarmReport:
		return TypeSwarmReport, nil
	case state.SetPlans:
		return TypeSetPlans, nil
	case state.IssueTicket:
		return TypeIssueTicket, nil
	case state.PutExpected:
		return TypePutExpected, nil
	case state.EndSessions:
		return TypeEndSessions, nil
	case state.SwarmJoin:
		return TypeSwarmJoin, nil
	case state.SetLabels:
		return TypeSetLabels, nil
	case state.PowerRecord:
		return TypePowerRecord, nil
	case state.PowerRecover:
		return TypePowerRecover, nil
	case state.RaiseProtocol:
		return TypeRaiseProtocol, nil
	case state.SwarmOpStart:
		return TypeSwarmOpStart, nil
	case state.SwarmOpDone:
		return TypeSwarmOpDone, nil
	case state.Reprovision:
		return TypeReprovision, nil
	}
	return 0, fmt.Errorf("fsm: no command type for %T", cmd)
}

// Encode turns a command into a log entry: type byte + JSON.
func Encode(cmd state.Command) ([]byte, error) {
	t, err := typeOf(cmd)
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	return append([]byte{byte(t)}, js...), nil
}

// Outcome is what applying one entry gives the proposer, through raft.ApplyFuture's
// Response: the result, or the error that refused it (a *state.Rejected; any other error
// means the entry could not be decoded).
type Outcome struct {
	Result state.Result
	Err    error
}

// Apply decodes one entry and applies it to the store.
func Apply(s *state.Store, data []byte, index uint64) Outcome {
	if len(data) == 0 {
		return Outcome{Err: errors.New("fsm: empty command")}
	}
	body := data[1:]
	switch Type(data[0]) {
	case TypeInitCluster:
		return apply(body, index, s.ApplyInitCluster)
	case TypePutCoordinator:
		return apply(body, index, s.ApplyPutCoordinator)
	case TypeRemoveCoordinator:
		return apply(body, index, s.ApplyRemoveCoordinator)
	case TypeRegister:
		return apply(body, index, s.ApplyRegister)
	case TypeCheckin:
		return apply(body, index, s.ApplyCheckin)
	case TypeSetPlan:
		return apply(body, index, s.ApplySetPlan)
	case TypeReport:
		return apply(body, index, s.ApplyReport)
	case TypeSetBoot:
		return apply(body, index, s.ApplySetBoot)
	case TypeGossip:
		return apply(body, index, s.ApplyGossip)
	case TypeAction:
		return apply(body, index, s.ApplyAction)
	case TypePutRole:
		return apply(body, index, s.ApplyPutRole)
	case TypeDeleteRole:
		return apply(body, index, s.ApplyDeleteRole)
	case TypePutToken:
		return apply(body, index, s.ApplyPutToken)
	case TypeDeleteToken:
		return apply(body, index, s.ApplyDeleteToken)
	case TypeSwarmClaim:
		return apply(body, index, s.ApplySwarmClaim)
	case TypeSwarmReport:
		return apply(body, index, s.ApplySwarmReport)
	case TypeSetPlans:
		return apply(body, index, s.ApplySetPlans)
	case TypeIssueTicket:
		return apply(body, index, s.ApplyIssueTicket)
	case TypePutExpected:
		return apply(body, index, s.ApplyPutExpected)
	case TypeEndSessions:
		return apply(body, index, s.ApplyEndSessions)
	case TypeSwarmJoin:
		return apply(body, index, s.ApplySwarmJoin)
	case TypeSetLabels:
		return apply(body, index, s.ApplySetLabels)
	case TypePowerRecord:
		return apply(body, index, s.ApplyPowerRecord)
	case TypePowerRecover:
		return apply(body, index, s.ApplyPowerRecover)
	case TypeRaiseProtocol:
		return apply(body, index, s.ApplyRaiseProtocol)
	case TypeSwarmOpStart:
		return apply(body, index, s.ApplySwarmOpStart)
	case TypeSwarmOpDone:
		return apply(body, index, s.ApplySwarmOpDone)
	case TypeReprovision:
		return apply(body, index, s.ApplyReprovision)
	}
	// An unknown type means a newer coordinator wrote this entry. Failing loudly beats
	// silently diverging from the coordinators that understand it.
	panic(fmt.Sprintf("fsm: unknown command type %d at index %d: upgrade this coordinator", data[0], index))
}

// apply decodes a command body and applies it. Bodies are written by encoding/json; they
// are read with the JSON v2 decoder (go-json-experiment, what became encoding/json/v2):
// the same values for everything encoding/json writes, at under half the CPU and a
// fifth of the allocations, and every coordinator decodes every command (decode_test.go
// checks that both decoders agree on every command type).
func apply[T any](body []byte, index uint64, fn func(T, uint64) (state.Result, error)) Outcome {
	var cmd T
	if err := jsonv2.Unmarshal(body, &cmd); err != nil {
		return Outcome{Err: fmt.Errorf("fsm: decoding %T: %v", cmd, err)}
	}
	res, err := fn(cmd, index)
	return Outcome{Result: res, Err: err}
}

// FSM adapts the store to raft.FSM (and raft.BatchingFSM, so a batch of entries is
// applied in one call).
type FSM struct {
	Store *state.Store
}

var _ raft.BatchingFSM = (*FSM)(nil)

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	return Apply(f.Store, l.Data, l.Index)
}

// ApplyBatch implements raft.BatchingFSM.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	for i, l := range logs {
		out[i] = f.Apply(l)
	}
	return out
}

// Snapshot implements raft.FSM. The copy is taken under the store's read lock, so it is
// consistent at one index; Persist encodes it, streaming, while applies go on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{f.Store.Snapshot()}, nil
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var env struct {
		Applied uint64      `json:"applied"`
		State   *state.Data `json:"state"`
	}
	if err := json.NewDecoder(rc).Decode(&env); err != nil {
		return fmt.Errorf("fsm: reading snapshot: %w", err)
	}
	if env.State == nil {
		return errors.New("fsm: reading snapshot: it holds no state")
	}
	f.Store.Restore(env.State, env.Applied)
	return nil
}

// snapshot is written as {"applied":N,"state":{...}}.
type snapshot struct{ state.Snapshot }

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	err := s.write(sink)
	if err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) write(w io.Writer) error {
	if _, err := fmt.Fprintf(w, `{"applied":%d,"state":`, s.Applied); err != nil {
		return err
	}
	if err := s.Encode(w); err != nil {
		return err
	}
	_, err := io.WriteString(w, "}\n")
	return err
}

func (s *snapshot) Release() {}
