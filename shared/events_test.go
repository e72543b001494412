package shared

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// TestLiveEventsRoundTrip: what the status server encodes is what a client reads, with
// the keep-alive comments and the retry field a real stream carries in between.
func TestLiveEventsRoundTrip(t *testing.T) {
	sent := []LiveBatch{
		{Counts: map[State]int{StateReady: 2}, Total: 2, Machines: []LiveUpdate{
			{ID: "m-1", State: StateReady, Domain: "r1", Percent: -1, Title: "m-1 · ready", Width: -1},
			{ID: "m-2", Gone: true}}},
		{Counts: map[State]int{}, Reload: true},
	}
	var stream bytes.Buffer
	stream.WriteString("retry: 2000\n: rivet live updates\n\n")
	for _, b := range sent {
		stream.Write(EncodeLiveBatch(b))
		stream.WriteString(": ping\n\n")
	}
	var got []LiveBatch
	if err := ReadLiveEvents(&stream, func(b LiveBatch) bool { got = append(got, b); return true }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sent) {
		t.Fatalf("read %+v, want %+v", got, sent)
	}
}

// TestLiveUpdateWireNames pins the field names the pages' script reads.
func TestLiveUpdateWireNames(t *testing.T) {
	raw := string(EncodeLiveBatch(LiveBatch{Machines: []LiveUpdate{{ID: "m-1", Domain: "z1", Width: 3}}}))
	for _, want := range []string{"event: machines\ndata: {", `"rack":"z1"`, `"w":3`, `"pct":0`, "}\n\n"} {
		if !strings.Contains(raw, want) {
			t.Errorf("%q lacks %q", raw, want)
		}
	}
}

func TestReadLiveEventsStopsWhenAsked(t *testing.T) {
	stream := strings.Repeat(string(EncodeLiveBatch(LiveBatch{Total: 1})), 3)
	n := 0
	if err := ReadLiveEvents(strings.NewReader(stream), func(LiveBatch) bool { n++; return false }); err != nil || n != 1 {
		t.Fatalf("read %d batches (err %v), want 1 and nil", n, err)
	}
}

func TestReadLiveEventsRefusesWhatIsNotABatch(t *testing.T) {
	err := ReadLiveEvents(strings.NewReader("event: machines\ndata: {\"total\": \"many\"}\n\n"), func(LiveBatch) bool { return true })
	if err == nil || !strings.Contains(err.Error(), "not a batch") {
		t.Fatalf("got %v, want a not-a-batch error", err)
	}
}

// TestReadLiveEventsJoinsDataLines: SSE lets an event's data span lines.
func TestReadLiveEventsJoinsDataLines(t *testing.T) {
	var got LiveBatch
	err := ReadLiveEvents(strings.NewReader("data: {\"total\":\ndata:7}\n\n"), func(b LiveBatch) bool { got = b; return true })
	if err != nil || got.Total != 7 {
		t.Fatalf("got %+v, %v; want total 7", got, err)
	}
}
