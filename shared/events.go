package shared

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// PathLiveEvents is the live-events stream the status pages serve (GET, with an operator
// token or a page session; ?machine=ID narrows it to one machine): Server-Sent Events,
// one LiveEventName event per LiveBatch, coalesced to one update per machine per
// interval. The pages' script and `rivet machines watch` read it.
const PathLiveEvents = "/status/events"

// LiveEventName is the SSE event name of every batch.
const LiveEventName = "machines"

// LiveUpdate is one machine's new look.
type LiveUpdate struct {
	ID    MachineID `json:"id"`
	State State     `json:"state"`
	Role  string    `json:"role,omitempty"`
	// Domain is the machine's failure domain: the value of the label the coordinator
	// places managers by (--failure-domain-label). Named rack on the wire, the default.
	Domain   string  `json:"rack,omitempty"`
	Hostname string  `json:"hostname,omitempty"`
	Step     string  `json:"step,omitempty"`
	Percent  float64 `json:"pct"` // -1 when unknown
	Rate     float64 `json:"rate,omitempty"`
	Title    string  `json:"title"`
	Width    int     `json:"w"` // tile bar width in twentieths, -1 none
	Error    string  `json:"error,omitempty"`
	Gone     bool    `json:"gone,omitempty"`
}

// LiveBatch is one event of the stream: the machines that changed and the new counts.
type LiveBatch struct {
	Counts   map[State]int `json:"counts"`
	Total    int           `json:"total"`
	Machines []LiveUpdate  `json:"machines"`
	Reload   bool          `json:"reload,omitempty"` // too much changed: list everything again
}

// EncodeLiveBatch frames a batch as one SSE event.
func EncodeLiveBatch(b LiveBatch) []byte {
	var buf bytes.Buffer
	buf.WriteString("event: " + LiveEventName + "\ndata: ")
	_ = json.NewEncoder(&buf).Encode(b) // ends with the newline that ends the data line
	buf.WriteString("\n")
	return buf.Bytes()
}

// maxLiveEvent bounds one event: a batch about every machine of a large fleet.
const maxLiveEvent = 64 << 20

// ReadLiveEvents reads the stream from r and calls each with every batch, until r ends
// (nil, or the read error), each returns false (nil), or an event is not a batch (an
// error: the stream is not what this client speaks). Comments, pings and other fields
// are skipped; an event's data may span several lines, as SSE allows.
func ReadLiveEvents(r io.Reader, each func(LiveBatch) bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLiveEvent)
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if line != "" {
			if v, ok := strings.CutPrefix(line, "data:"); ok {
				data = append(data, strings.TrimPrefix(v, " "))
			}
			continue
		}
		if len(data) == 0 {
			continue
		}
		var b LiveBatch
		if err := json.Unmarshal([]byte(strings.Join(data, "\n")), &b); err != nil {
			return fmt.Errorf("live events: not a batch: %w", err)
		}
		data = data[:0]
		if !each(b) {
			return nil
		}
	}
	return sc.Err()
}
