package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

const reprovisionUsage = "rivet machines reprovision MACHINE_ID [--image-url URL --image-sha256 HEX] [--via kexec|bmc] [--allow-fewer-managers] [--reason TEXT] [--wait]"

// machinesReprovision starts a machine's re-provisioning and, with --wait, follows its
// phases until it is ready again or stops where the operator must act.
func machinesReprovision(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "machines reprovision", reprovisionUsage)
	reason := v.fs.String("reason", "", "why (kept on the machine's timeline)")
	url := v.fs.String("image-url", "", "write this image instead of the role's (a coordinator path /v1/images/... or an http(s) URL)")
	sum := v.fs.String("image-sha256", "", "the sha256 of the uncompressed image (required with --image-url)")
	compression := v.fs.String("image-compression", "", "the image's compression: auto (default), zstd, gzip or none")
	fewer := v.fs.Bool("allow-fewer-managers", false,
		"let a manager go without a promoted stand-in (a swarm of managers only): one manager fewer until it is back")
	via := v.fs.String("via", "kexec", "how the installed machine boots the Rivet agent for a new image: kexec (its agent, no BMC needed) or bmc (a power cycle with PXE once)")
	wait := v.fs.Bool("wait", false, "follow the phases until the machine is ready again (or failed)")
	timeout := v.fs.Duration("timeout", 30*time.Minute, "with --wait: give up after this long")
	if err := v.parse(args); err != nil {
		return err
	}
	id, err := v.machineArg()
	if err != nil {
		return err
	}
	req := &shared.ReprovisionRequest{Reason: *reason, AllowFewerManagers: *fewer, Via: shared.ReprovisionVia(*via)}
	switch {
	case *url != "":
		req.Image = &shared.ImageSpec{URL: *url, SHA256: *sum, Compression: *compression}
	case *sum != "" || *compression != "":
		return errors.New("--image-sha256 and --image-compression go with --image-url")
	}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("machines reprovision: %w", err)
	}
	c, err := v.client()
	if err != nil {
		return err
	}
	m, err := c.Reprovision(ctx, id, req)
	if err != nil {
		return err
	}
	if !*wait {
		return output(v, m, func(w io.Writer, m *shared.Machine) {
			fmt.Fprintf(w, "%s: re-provisioning started (drain first); follow it with `rivet machines show %s`\n", m.ID, m.ID)
		})
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	return followReprovision(ctx, env.Stdout, c, id)
}

// followReprovision prints each phase and state change until the re-provisioning ends.
func followReprovision(ctx context.Context, w io.Writer, c *shared.Client, id shared.MachineID) error {
	began, last := time.Now(), ""
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		m, err := c.Machine(ctx, id)
		if err != nil {
			return err
		}
		now := reprovisionLine(m)
		if now != last {
			fmt.Fprintf(w, "%6.0fs  %s\n", time.Since(began).Seconds(), now)
			last = now
		}
		switch {
		case m.Reprovision == nil && m.State == shared.StateReady:
			fmt.Fprintf(w, "%s: re-provisioned and ready in %s\n", id, time.Since(began).Round(time.Second))
			return nil
		case m.State == shared.StateFailed:
			return fmt.Errorf("%s failed while re-provisioning: %s; see `rivet machines show %s`, then `rivet machines retry %s`",
				id, lastError(m), id, id)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s is still re-provisioning (%s): %w", id, now, ctx.Err())
		case <-tick.C:
		}
	}
}

func reprovisionLine(m *shared.Machine) string {
	phase := "done"
	if m.Reprovision != nil {
		phase = string(m.Reprovision.Phase)
	}
	line := fmt.Sprintf("phase %-9s state %s", phase, m.State)
	if cur := m.CurrentStep(); cur != nil {
		line += ", step " + cur.Name
	}
	return line
}

func lastError(m *shared.Machine) string {
	if m.LastError == nil {
		return "no error recorded"
	}
	return m.LastError.Step + ": " + m.LastError.Message
}
