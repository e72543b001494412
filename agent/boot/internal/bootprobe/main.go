// Command bootprobe is a stand-in /init for boot's qemu test: it runs boot.Prepare,
// reports what it found to the URL from rivet.url, and powers the VM off.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/agent/boot"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env, err := boot.Prepare(ctx, log, nil)
	if err == nil {
		err = callback(ctx, env)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bootprobe: FAILED:", err)
	} else {
		env.Progress(6, "probe done, powering off")
	}
	if boot.IsPID1() {
		if err := boot.PowerOff(); err != nil {
			fmt.Fprintln(os.Stderr, "bootprobe: power off:", err)
		}
		select {} // PID 1 must never exit: the kernel would panic
	}
}

// callback GETs <rivet.url>?nic=..&ip=..&disks=vda:SERIAL,..&modules=...
func callback(ctx context.Context, env *boot.Env) error {
	if len(env.Params.URLs) == 0 {
		return fmt.Errorf("no rivet.url")
	}
	q := url.Values{}
	q.Set("nic", env.Interface)
	q.Set("mac", env.MAC.String())
	q.Set("ip", env.IP.String())
	q.Set("prefix", env.Prefix.String())
	q.Set("gw", env.Gateway.String())
	q.Set("disks", strings.Join(disks(), ","))
	q.Set("modules", strings.Join(env.Modules, ","))
	q.Set("pid1", fmt.Sprint(boot.IsPID1()))
	env.Progress(4, "calling back %s", env.Params.URLs[0])
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.Params.URLs[0]+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("callback: %s", resp.Status)
	}
	env.Progress(5, "callback answered %s", resp.Status)
	return nil
}

// disks lists block devices with their serials (virtio-blk exposes it in sysfs).
func disks() []string {
	entries, _ := os.ReadDir("/sys/block")
	var out []string
	for _, e := range entries {
		serial, _ := os.ReadFile(filepath.Join("/sys/block", e.Name(), "serial"))
		if s := strings.TrimSpace(string(serial)); s != "" {
			out = append(out, e.Name()+":"+s)
		}
	}
	return out
}
