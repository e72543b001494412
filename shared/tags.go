package shared

import (
	"fmt"
	"strings"
)

// Tags is the Serf tag schema. Tags carry identity and a little state, never bulk data:
// Serf limits all tags of a member to 512 bytes in total.
type Tags struct {
	Kind      string    `json:"kind"` // "coordinator" or "agent"
	MachineID MachineID `json:"id,omitempty"`
	State     State     `json:"st,omitempty"`
	Step      string    `json:"step,omitempty"`
	Version   string    `json:"v,omitempty"`
	API       string    `json:"api,omitempty"` // coordinators: their API host:port
}

// Tag keys on the wire; short because they travel in every gossip message.
const (
	tagKind    = "k"
	tagID      = "id"
	tagState   = "st"
	tagStep    = "step"
	tagVersion = "v"
	tagAPI     = "api"

	KindCoordinator = "coordinator"
	KindAgent       = "agent"

	// MaxTagBytes is Serf's limit for the encoded tags of one member.
	MaxTagBytes = 512
)

// Map encodes the tags for serf.Config.Tags, dropping empty values.
func (t Tags) Map() map[string]string {
	m := map[string]string{tagKind: t.Kind}
	for k, v := range map[string]string{tagID: string(t.MachineID), tagState: string(t.State),
		tagStep: t.Step, tagVersion: t.Version, tagAPI: t.API} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

// ParseTags decodes and validates a member's tags. Unknown keys are an error, so a
// member from another pool or a newer schema is noticed rather than half-read.
func ParseTags(m map[string]string) (Tags, error) {
	size := 0
	var t Tags
	for k, v := range m {
		size += len(k) + len(v)
		switch k {
		case tagKind:
			t.Kind = v
		case tagID:
			t.MachineID = MachineID(v)
		case tagState:
			t.State = State(v)
		case tagStep:
			t.Step = v
		case tagVersion:
			t.Version = v
		case tagAPI:
			t.API = v
		default:
			return Tags{}, fmt.Errorf("unknown serf tag %q", k)
		}
	}
	if size > MaxTagBytes {
		return Tags{}, fmt.Errorf("serf tags are %d bytes, over the limit of %d", size, MaxTagBytes)
	}
	return t, t.Validate()
}

// Validate checks the tags' values.
func (t Tags) Validate() error {
	switch t.Kind {
	case KindCoordinator:
		if t.API == "" {
			return fmt.Errorf("coordinator tags need api")
		}
		if t.MachineID != "" || t.State != "" {
			return fmt.Errorf("coordinator tags carry no machine id or state")
		}
	case KindAgent:
		if err := t.MachineID.Validate(); err != nil {
			return err
		}
		if t.State != "" {
			if err := t.State.Validate(); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("tag kind %q: want coordinator or agent", t.Kind)
	}
	if t.Step != "" && ValidateName("step", t.Step) != nil {
		return fmt.Errorf("bad step tag %q", t.Step)
	}
	if strings.ContainsAny(t.Version+t.API, " \x00\n") || len(t.Version) > 64 || len(t.API) > 128 {
		return fmt.Errorf("bad version or api tag")
	}
	return nil
}
