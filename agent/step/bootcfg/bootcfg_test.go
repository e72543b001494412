package bootcfg

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

type booter struct {
	got []shared.BootTarget
	err error
}

func (b *booter) SetBoot(_ context.Context, id shared.MachineID, t shared.BootTarget) error {
	if id != "m-0000000000000001" {
		return errors.New("wrong machine")
	}
	b.got = append(b.got, t)
	return b.err
}

func bootStep(t shared.BootTarget) shared.Step {
	return shared.Step{Name: "boot", Kind: shared.StepBootCfg, Phase: shared.PhaseRAM, BootCfg: &shared.BootCfgStep{Boot: t}}
}

func TestSetsTheBootTarget(t *testing.T) {
	b := &booter{}
	e := &Executor{ID: "m-0000000000000001", Booter: b}
	for range 2 { // idempotent: a rerun sets it again
		if st, err := e.Run(context.Background(), bootStep(shared.BootDisk), nil); err != nil || st != shared.StepSucceeded {
			t.Fatalf("run: %v %v", st, err)
		}
	}
	if len(b.got) != 2 || b.got[0] != shared.BootDisk {
		t.Fatalf("recorded %v", b.got)
	}
}

func TestRefusalIsPermanentOutageIsNot(t *testing.T) {
	for status, permanent := range map[int]bool{
		http.StatusForbidden:          true,
		http.StatusServiceUnavailable: false,
		http.StatusTooManyRequests:    false,
	} {
		b := &booter{err: &shared.APIError{Status: status, Code: "x", Message: "no"}}
		_, err := (&Executor{ID: "m-0000000000000001", Booter: b}).Run(context.Background(), bootStep(shared.BootDisk), nil)
		if err == nil || step.IsPermanent(err) != permanent {
			t.Errorf("HTTP %d: error %v, permanent %v; want permanent %v", status, err, step.IsPermanent(err), permanent)
		}
	}
	_, err := (&Executor{Booter: &booter{}}).Run(context.Background(), shared.Step{Name: "boot", Kind: shared.StepBootCfg}, nil)
	if !step.IsPermanent(err) {
		t.Fatalf("a step without payload: %v", err)
	}
}
