package coordinator_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/status/statustest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestMetricsCountStepsAndImages drives a machine through a step and downloads an image,
// then finds both on /metrics with the machine-state gauge.
func TestMetricsCountStepsAndImages(t *testing.T) {
	dir := t.TempDir()
	c := statustest.Start(t, dir)
	ctx := context.Background()
	f, err := statustest.Planned(ctx, c, 1, func(int) map[string]string { return map[string]string{"pool": "sim"} })
	if err != nil {
		t.Fatal(err)
	}
	m := f.Machines[0]
	if err := m.Report(ctx, "disk", shared.StepRunning, nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := m.Report(ctx, "disk", shared.StepSucceeded, nil, ""); err != nil {
		t.Fatal(err)
	}
	image := strings.Repeat("rivet", 20000)
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "images", "os.raw"), []byte(image), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, err := m.Client.Open(ctx, shared.PathImages+"os.raw", nil)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != int64(len(image)) {
		t.Fatalf("downloaded %d bytes, want %d", n, len(image))
	}

	want := []string{
		`rivet_step_duration_seconds_count{kind="disk",result="succeeded"} 1`,
		fmt.Sprintf("rivet_image_bytes_served_total %d", len(image)),
		`rivet_image_requests_total{code="200"} 1`,
		`rivet_machines{state="provisioning"} 1`,
		`rivet_raft_commit_seconds_count`,
	}
	testenv.Eventually(t, 10*time.Second, "every wanted series on /metrics", func() error {
		body := scrape(t, c)
		var missing []string
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("/metrics lacks %q", missing)
		}
		return nil
	})
}

func scrape(t *testing.T, c *coordinatortest.InProcess) string {
	t.Helper()
	text, err := c.Client("").Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return text
}
