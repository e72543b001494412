package coordinator_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/netboot"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// TestLogLinesNameEachKeyOnce runs a coordinator with gossip and HTTP boot and reads its
// real log lines: no logger may be wrapped twice with the same key (the boot services
// once logged component=netboot twice).
func TestLogLinesNameEachKeyOnce(t *testing.T) {
	var logs testenv.LogBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dc := coordinator.DaemonConfig{Netboot: &netboot.Config{Mode: netboot.ModeOff, NoTFTP: true,
		HTTPAddr: "127.0.0.1:0", ServerIP: net.IPv4(127, 0, 0, 1), BootDir: t.TempDir()}}
	c, err := coordinatortest.StartInProcess(context.Background(), t.TempDir(), logger, dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	for _, want := range []string{`"component":"netboot"`, `"lib":"serf"`, `"lib":"memberlist"`} {
		testenv.Eventually(t, 20*time.Second, "a log line with "+want, testenv.Holds(
			func() bool { return strings.Contains(logs.String(), want) }, logs.String))
	}
	for _, bad := range testenv.RepeatedKeys(logs.String()) {
		t.Errorf("repeated key in %s", bad)
	}
}
