package forward

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/rivetmetal/rivet/coordinator/state"
)

// Batch is what a follower sends the leader: encoded commands, in order.
type Batch struct {
	Commands [][]byte `json:"commands"`
}

// Results holds one outcome per command of a Batch, in order.
type Results struct {
	Results []Item `json:"results"`
}

// Item is one command's outcome on the wire: a result, or the typed error that took its
// place. Error is one of the Err* names below; a rejection travels whole.
type Item struct {
	Result   state.Result    `json:"result"`
	Error    string          `json:"error,omitempty"`
	Rejected *state.Rejected `json:"rejected,omitempty"`
	Message  string          `json:"message,omitempty"`
}

// The names of the errors an Item carries.
const (
	errRejected       = "rejected"
	errNotApplied     = "not_applied"
	errNoLeader       = "no_leader"
	errOutcomeUnknown = "outcome_unknown"
	errOther          = "internal"
)

// ItemOf puts an apply outcome on the wire.
func ItemOf(res state.Result, err error) Item {
	if err == nil {
		return Item{Result: res}
	}
	it := Item{Message: err.Error()}
	if r, ok := errors.AsType[*state.Rejected](err); ok {
		it.Error, it.Rejected = errRejected, r
		return it
	}
	switch {
	case errors.Is(err, state.ErrOutcomeUnknown):
		it.Error = errOutcomeUnknown
	case errors.Is(err, state.ErrNoLeader):
		it.Error = errNoLeader
	case errors.Is(err, state.ErrNotApplied):
		it.Error = errNotApplied
	default:
		it.Error = errOther
	}
	return it
}

// Outcome takes an apply outcome off the wire: the leader's own error, typed again.
func (it Item) Outcome() (state.Result, error) {
	switch it.Error {
	case "":
		return it.Result, nil
	case errRejected:
		if it.Rejected != nil {
			return state.Result{}, it.Rejected
		}
	case errOutcomeUnknown:
		return state.Result{}, fmt.Errorf("%w: leader: %s", state.ErrOutcomeUnknown, it.Message)
	case errNoLeader:
		// The leader stepped down before the command reached its log.
		return state.Result{}, fmt.Errorf("%w: %w: leader: %s", state.ErrNoLeader, state.ErrNotApplied, it.Message)
	case errNotApplied:
		return state.Result{}, fmt.Errorf("%w: leader: %s", state.ErrNotApplied, it.Message)
	}
	return state.Result{}, fmt.Errorf("leader: %s", it.Message)
}

// Serve is the leader's side: it decodes a follower's batch and applies its commands
// concurrently, so Raft commits them together. isLeader false answers 421 (the follower
// asks again elsewhere); a malformed batch, 400.
func Serve(ctx context.Context, body []byte, isLeader func() bool,
	apply func(context.Context, []byte) (state.Result, error)) (answer []byte, status int) {
	if !isLeader() {
		return nil, http.StatusMisdirectedRequest
	}
	var batch Batch
	if err := jsonv2.Unmarshal(body, &batch); err != nil || len(batch.Commands) > MaxBatch {
		return nil, http.StatusBadRequest
	}
	out := Results{Results: make([]Item, len(batch.Commands))}
	var wg sync.WaitGroup
	for i, data := range batch.Commands {
		wg.Go(func() {
			out.Results[i] = ItemOf(apply(ctx, data))
		})
	}
	wg.Wait()
	b, _ := json.Marshal(out)
	return b, http.StatusOK
}
