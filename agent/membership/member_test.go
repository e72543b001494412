package membership

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

func key(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func start(t *testing.T, id shared.MachineID, k string) *Member {
	t.Helper()
	m, err := Start(Config{ID: id, BindAddr: "127.0.0.1:0", Key: k})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

func TestStartRefusesBadInput(t *testing.T) {
	short := base64.StdEncoding.EncodeToString([]byte("sixteen byte key"))
	for name, cfg := range map[string]Config{
		"no key":     {ID: "m-0000000000000001", BindAddr: "127.0.0.1:0"},
		"short key":  {ID: "m-0000000000000001", BindAddr: "127.0.0.1:0", Key: short},
		"bad id":     {ID: "node-1", BindAddr: "127.0.0.1:0", Key: key(t)},
		"bad bind":   {ID: "m-0000000000000001", BindAddr: "7946", Key: key(t)},
		"bad advert": {ID: "m-0000000000000001", BindAddr: "127.0.0.1:0", AdvertiseAddr: "host.example", Key: key(t)},
		"bad state":  {ID: "m-0000000000000001", BindAddr: "127.0.0.1:0", Key: key(t), Tags: shared.Tags{State: "bogus"}},
	} {
		m, err := Start(cfg)
		if err == nil {
			_ = m.Shutdown()
			t.Errorf("%s: Start succeeded", name)
			continue
		}
		if cfg.Key != "" && strings.Contains(err.Error(), cfg.Key) {
			t.Errorf("%s: the error echoes the key", name)
		}
	}
}

func TestMembersSeeEachOtherAndTags(t *testing.T) {
	k := key(t)
	a := start(t, "m-00000000000000a1", k)
	b := start(t, "m-00000000000000b2", k)
	if _, err := b.Join([]string{a.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetTags(shared.Tags{State: shared.StateReady, Step: "swarm"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "a to see b's tags", func() error {
		members := a.Members()
		for _, m := range members {
			if m.Name == "m-00000000000000b2" && m.Tags.State == shared.StateReady && m.Tags.Step == "swarm" && m.Tags.Kind == shared.KindAgent {
				return nil
			}
		}
		return fmt.Errorf("members %+v", members)
	})
	if c := a.Counts(); c["alive"] != 2 {
		t.Errorf("counts %v, want 2 alive", c)
	}
	if n := a.CoordinatorsAlive(); n != 0 {
		t.Errorf("CoordinatorsAlive = %d among agents only", n)
	}
	if got := b.Tags(); got.MachineID != "m-00000000000000b2" {
		t.Errorf("Tags() lost the machine id: %+v", got)
	}
}
