package bench

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/status"
)

// TestStatusBenchPrintsFigures runs the status bench small: it must render the page,
// print its figures and deliver updates to the clients. How fast is a figure, never a
// verdict: it is logged.
func TestStatusBenchPrintsFigures(t *testing.T) {
	var out bytes.Buffer
	res, err := Status(context.Background(), &out, StatusOptions{Machines: 300, Renders: 5, Clients: 3,
		Reports: 500, Duration: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^rivet-figure: status fleet page machines=300 all_tiles p50_ms=[\d.]+ p95_ms=[\d.]+ cpu_ms=[\d.]+ bytes=\d+ goal_p95_ms=200 ratio=[\d.]+$`,
		`(?m)^rivet-figure: status fleet page machines=300 filtered_failed `,
		`(?m)^rivet-figure: status event stream machines=300 clients=3 reports_per_s=\d+ delivered_updates_per_s=\d+ `,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("output lacks %s:\n%s", re, out.String())
		}
	}
	if res.EventsPerSec <= 0 {
		t.Errorf("no update reached any stream client: %+v", res)
	}
	if res.PageBytes < 300*50 {
		t.Errorf("fleet page is only %d bytes for 300 machines", res.PageBytes)
	}
	t.Logf("rivet-figure: status bench small machines=300 clients=3 batches_per_client_per_s=%.2f (the stream coalesces to ~1) page_p95_ms=%.1f",
		res.BatchesPerClientPerSec, ms(res.PageP95))
}

// BenchmarkFleetPage renders the fleet page of 10,000 machines (for profiling;
// `rivet-bench status` prints the percentiles).
func BenchmarkFleetPage(b *testing.B) {
	store, token, _, err := statusFleet(10000)
	if err != nil {
		b.Fatal(err)
	}
	pages := status.New(status.Config{Backend: readOnly{store}})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest(http.MethodGet, "/status/", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		pages.ServeHTTP(rec, req)
	}
}
