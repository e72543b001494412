// Package grafana holds the sample Grafana dashboard (rivet.json); its test keeps the
// dashboard in step with the metrics the code defines.
package grafana

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

type dashboard struct {
	Title  string  `json:"title"`
	UID    string  `json:"uid"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// metricDefinition finds the names the code gives its Prometheus series.
var metricDefinition = regexp.MustCompile(`(?:Name:\s*|NewDesc\(\s*)"(rivet_[a-z0-9_]+)"`)

// definedMetrics scans the coordinator's and the agent's sources for metric names, and
// adds the series a histogram exports.
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, dir := range []string{"../../coordinator", "../../agent"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range metricDefinition.FindAllStringSubmatch(string(src), -1) {
				for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
					names[m[1]+suffix] = true
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in the sources: the scan is broken", len(names))
	}
	return names
}

var metricRef = regexp.MustCompile(`\brivet_[a-z0-9_]+\b`)

func TestDashboardReferencesOnlyDefinedMetrics(t *testing.T) {
	data, err := os.ReadFile("rivet.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("rivet.json is not valid JSON: %v", err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard lacks a title, uid or panels: %+v", d)
	}
	defined := definedMetrics(t)
	used := map[string]bool{}
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			refs := metricRef.FindAllString(target.Expr, -1)
			if len(refs) == 0 {
				t.Errorf("panel %q: query %q names no Rivet metric", p.Title, target.Expr)
			}
			for _, name := range refs {
				used[name] = true
				if !defined[name] {
					t.Errorf("panel %q uses %s, which no code defines", p.Title, name)
				}
			}
		}
	}
	// The list: each must be on the dashboard.
	for _, want := range []string{"rivet_machines", "rivet_step_duration_seconds_bucket", "rivet_boot_requests_total",
		"rivet_image_bytes_served_total", "rivet_raft_commit_seconds_bucket", "rivet_serf_members"} {
		if !used[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
}
