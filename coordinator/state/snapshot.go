package state

import (
	"bufio"
	"encoding/json"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

// Snapshot is a point-in-time copy of the state (see Store.Snapshot).
type Snapshot struct {
	data    *Data
	Applied uint64 // the Raft index it reflects
}

// Encode writes the canonical encoding of the state to w: exactly json.Marshal of the
// Data (map keys sorted, so equal states encode to equal bytes), but written one map
// entry at a time. At 10,000 machines the encoding is ~60 MB, and json.Marshal's growing
// buffer and final copy held three times that at every Raft snapshot.
func (sn Snapshot) Encode(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if err := encodeStruct(bw, reflect.ValueOf(sn.data).Elem()); err != nil {
		return err
	}
	return bw.Flush()
}

// encodeStruct writes a struct whose fields all carry a json name, streaming its map
// fields; omitempty is honoured for scalars (a field added later, such as Protocol, is
// absent until set, so the state encodes as it did before the field existed). The
// equality test with json.Marshal checks all of it.
func encodeStruct(w *bufio.Writer, v reflect.Value) error {
	t := v.Type()
	w.WriteByte('{')
	first := true
	for i := range t.NumField() {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if opts == "omitempty" && v.Field(i).Kind() != reflect.Map && v.Field(i).IsZero() {
			continue
		}
		if !first {
			w.WriteByte(',')
		}
		first = false
		if err := encodeValue(w, name); err != nil {
			return err
		}
		w.WriteByte(':')
		var err error
		if f := v.Field(i); f.Kind() == reflect.Map {
			err = encodeMap(w, f)
		} else {
			err = encodeValue(w, f.Interface())
		}
		if err != nil {
			return err
		}
	}
	return w.WriteByte('}')
}

// encodeMap writes a map with string keys as encoding/json does: keys sorted, nil as null.
func encodeMap(w *bufio.Writer, m reflect.Value) error {
	if m.IsNil() {
		_, err := w.WriteString("null")
		return err
	}
	keys := m.MapKeys()
	slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
	w.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			w.WriteByte(',')
		}
		if err := encodeValue(w, k.String()); err != nil {
			return err
		}
		w.WriteByte(':')
		if err := encodeValue(w, m.MapIndex(k).Interface()); err != nil {
			return err
		}
	}
	return w.WriteByte('}')
}

func encodeValue(w *bufio.Writer, v any) error {
	b, err := json.Marshal(v)
	if err == nil {
		_, err = w.Write(b)
	}
	return err
}

// frozen returns a copy of the data that later mutations do not touch, cheap enough to
// take under the read lock: maps are copied, machines are cloned (clone copies what
// mutations change in place), and timelines keep their current length (event only
// appends past it or replaces the slice). The caller holds s.mu.
func (s *Store) frozen() *Data {
	d := &Data{
		Cluster:      s.data.Cluster,
		Coordinators: make(map[string]Coordinator, len(s.data.Coordinators)),
		Machines:     make(map[shared.MachineID]*shared.Machine, len(s.data.Machines)),
		Events:       make(map[shared.MachineID][]shared.Event, len(s.data.Events)),
		Roles:        make(map[string]*shared.Role, len(s.data.Roles)),
		Tokens:       make(map[string]*Token, len(s.data.Tokens)),
		TokenGens:    make(map[shared.MachineID]uint64, len(s.data.TokenGens)),
		Expected:     make(map[string]*shared.ExpectedMachine, len(s.data.Expected)),
		Tickets:      maps.Clone(s.data.Tickets),
		Attempts:     maps.Clone(s.data.Attempts),
		Protocol:     s.data.Protocol,
	}
	for k, e := range s.data.Expected { // MachineID is set in place when a row matches
		c := *e
		d.Expected[k] = &c
	}
	// Roles and tokens are replaced whole by their mutations, never changed in place.
	for k, v := range s.data.Coordinators {
		d.Coordinators[k] = v
	}
	for k, m := range s.data.Machines {
		d.Machines[k] = clone(m)
	}
	for k, evs := range s.data.Events {
		d.Events[k] = evs[:len(evs):len(evs)]
	}
	for k, v := range s.data.Roles {
		d.Roles[k] = v
	}
	for k, v := range s.data.Tokens {
		d.Tokens[k] = v
	}
	for k, v := range s.data.TokenGens {
		d.TokenGens[k] = v
	}
	d.Swarm = s.data.Swarm.clone() // its maps change in place
	return d
}
