package agent

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/agent/config"
	"github.com/rivetmetal/rivet/shared"
)

func TestMetricsEndpoint(t *testing.T) {
	a := New(config.Config{Mode: shared.ModeService}, Deps{})
	a.metrics.checkins.WithLabelValues("ok").Inc()
	addr, stop := a.serveMetrics("127.0.0.1:0")
	defer stop()
	if addr == "" {
		t.Fatal("metrics listener did not start")
	}
	resp, err := http.Get("http://" + addr + shared.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`rivet_agent_checkins_total{result="ok"} 1`,
		`rivet_agent_info{mode="service",version="` + shared.Version + `"} 1`,
		"go_goroutines",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// A second listener on the same address fails softly.
	if again, stop2 := a.serveMetrics(addr); again != "" {
		stop2()
		t.Error("a second listener on a busy address claims to listen")
	}
}
