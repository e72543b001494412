package fsm

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/rivetmetal/rivet/coordinator/state"
)

// commandBodies is one zero value of every command body type Encode knows.
func commandBodies() []state.Command {
	return []state.Command{state.InitCluster{}, state.PutCoordinator{}, state.RemoveCoordinator{}, state.Register{},
		state.Checkin{}, state.SetPlan{}, state.Report{}, state.SetBoot{}, state.Gossip{}, state.Action{},
		state.PutRole{}, state.DeleteRole{}, state.PutToken{}, state.DeleteToken{}, state.SwarmClaim{},
		state.SwarmReport{}, state.SetPlans{}, state.IssueTicket{}, state.PutExpected{}, state.EndSessions{},
		state.SwarmJoin{}, state.SetLabels{}, state.PowerRecord{}, state.PowerRecover{}, state.RaiseProtocol{},
		state.SwarmOpStart{}, state.SwarmOpDone{}}
}

// TestV2DecoderAgreesWithEncodingJSON fills every command type with random values,
// encodes it as Encode does, decodes it with encoding/json and with the v2 decoder that
// apply uses, and requires the two results to encode to the same bytes. Coordinators of
// two versions must build the same state from the same log.
func TestV2DecoderAgreesWithEncodingJSON(t *testing.T) {
	bodies := commandBodies()
	for typ := Type(1); ; typ++ {
		if typ > Type(len(bodies)) {
			break
		}
		if got, err := typeOf(bodies[typ-1]); err != nil || got != typ {
			t.Fatalf("commandBodies()[%d] is %T, type %d (%v): keep the list in enum order", typ-1, bodies[typ-1], got, err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, body := range bodies {
		typ := reflect.TypeOf(body)
		for round := range 200 {
			v := reflect.New(typ)
			fill(v.Elem(), rng, 0)
			data, err := json.Marshal(v.Interface())
			if err != nil {
				t.Fatalf("%s: %v", typ, err)
			}
			v1, v2 := reflect.New(typ), reflect.New(typ)
			if err := json.Unmarshal(data, v1.Interface()); err != nil {
				t.Fatalf("%s round %d: encoding/json: %v", typ, round, err)
			}
			if err := jsonv2.Unmarshal(data, v2.Interface()); err != nil {
				t.Fatalf("%s round %d: v2 refuses what encoding/json wrote: %v\n%s", typ, round, err, data)
			}
			b1, _ := json.Marshal(v1.Interface())
			b2, _ := json.Marshal(v2.Interface())
			if !bytes.Equal(b1, b2) {
				t.Fatalf("%s round %d: the decoders disagree\ninput: %s\nv1:    %s\nv2:    %s", typ, round, data, b1, b2)
			}
		}
	}
}

// strings that JSON encoders treat specially: escapes, HTML characters, invalid UTF-8,
// line separators, non-ASCII.
var awkwardStrings = []string{"", "a", "x\"y\\z", "<b>&amp;</b>", "\xff\xfe", "line\u2028sep", "Grüße 😀", "\x00\x1f", "9"}

// fill sets v, and everything reachable from it, to random values.
func fill(v reflect.Value, rng *rand.Rand, depth int) {
	if v.Type() == reflect.TypeFor[time.Time]() {
		t := time.Unix(rng.Int64N(4e9), rng.Int64N(1e9))
		if rng.IntN(2) == 0 {
			t = t.UTC()
		}
		v.Set(reflect.ValueOf(t))
		return
	}
	switch v.Kind() {
	case reflect.String:
		s := awkwardStrings[rng.IntN(len(awkwardStrings))]
		if rng.IntN(2) == 0 {
			s += string(rune('a' + rng.IntN(26)))
		}
		v.SetString(s)
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(rng.Uint64()) >> (64 - v.Type().Bits()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		v.SetUint(rng.Uint64() >> (64 - v.Type().Bits()))
	case reflect.Float32, reflect.Float64:
		v.SetFloat([]float64{0, 1.5, -2.25, 1e21, 3.0000001, rng.Float64() * 1e6}[rng.IntN(6)])
	case reflect.Pointer:
		if depth < 6 && rng.IntN(4) != 0 {
			p := reflect.New(v.Type().Elem())
			fill(p.Elem(), rng, depth+1)
			v.Set(p)
		}
	case reflect.Slice:
		if depth >= 6 || rng.IntN(4) == 0 {
			return // nil
		}
		n := rng.IntN(3)
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			fill(s.Index(i), rng, depth+1)
		}
		v.Set(s)
	case reflect.Array:
		for i := range v.Len() {
			fill(v.Index(i), rng, depth+1)
		}
	case reflect.Map:
		if depth >= 6 || rng.IntN(4) == 0 {
			return // nil
		}
		m := reflect.MakeMap(v.Type())
		for range rng.IntN(3) {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fill(k, rng, depth+1)
			fill(e, rng, depth+1)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), rng, depth+1)
			}
		}
	case reflect.Interface:
		if v.NumMethod() == 0 && rng.IntN(2) == 0 {
			v.Set(reflect.ValueOf(awkwardStrings[rng.IntN(len(awkwardStrings))]))
		}
	}
}
