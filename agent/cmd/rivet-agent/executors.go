package main

import (
	"fmt"
	"log/slog"
	"os/exec"
	"path"

	"github.com/rivetmetal/rivet/agent"
	"github.com/rivetmetal/rivet/agent/boot"
	"github.com/rivetmetal/rivet/agent/config"
	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/agent/step/bootcfg"
	"github.com/rivetmetal/rivet/agent/step/disk"
	"github.com/rivetmetal/rivet/agent/step/handoff"
	"github.com/rivetmetal/rivet/agent/step/image"
	"github.com/rivetmetal/rivet/agent/step/reboot"
	"github.com/rivetmetal/rivet/agent/step/swarm"
	"github.com/rivetmetal/rivet/shared"
)

// executors builds one executor per step kind. client carries the machine token: the
// image step streams through it, bootcfg records the next boot with it, the swarm step
// fetches its join token with it. A kind without an executor is reported by the runner
// as a failed step, visibly.
func executors(id shared.MachineID, client *shared.Client, mode shared.AgentMode, advertise, dockerHost string, ag *agent.Agent, log *slog.Logger) map[shared.StepKind]step.Executor {
	ex := map[shared.StepKind]step.Executor{
		shared.StepDisk:    &disk.Executor{Logger: log.With("step", "disk")},
		shared.StepImage:   &image.Executor{Source: client, Logger: log.With("step", "image")},
		shared.StepHandoff: &handoff.Executor{Files: installedFiles(ag), Prepare: mountPrep(mode, log), Logger: log.With("step", "handoff")},
		shared.StepBootCfg: &bootcfg.Executor{ID: id, Booter: client},
		shared.StepReboot: &reboot.Executor{Logger: log.With("step", "reboot"), Reboot: func() error {
			// Leave gossip first, so the coordinators record a planned absence ("left")
			// rather than a failure that marks the machine lost.
			ag.LeaveGossip()
			return rebootMachine(mode)
		}},
	}
	sw, err := swarm.New(swarm.Config{MachineID: id, Coordinator: client, AdvertiseAddr: advertise, DockerHost: dockerHost,
		Logger: log}) // it adds step=swarm itself
	if err != nil {
		log.Error("swarm executor unavailable", "err", err)
	} else {
		ex[shared.StepSwarm] = sw
	}
	return ex
}

// installedFiles is what the handoff step writes into the installed OS: the agent's
// config and its machine token, where the installed agent reads them.
func installedFiles(ag *agent.Agent) func() ([]handoff.File, error) {
	return func() ([]handoff.File, error) {
		cfg, state, stateName, err := ag.InstalledFiles()
		if err != nil {
			return nil, err
		}
		return []handoff.File{
			{Path: config.DefaultFile, Mode: 0o644, Data: cfg},
			{Path: path.Join(config.DefaultStateDir, stateName), Mode: 0o600, Data: state},
		}, nil
	}
}

// mountPrep loads the ext4 driver in the initramfs, where nothing loads modules on
// demand; an installed OS has modprobe and needs nothing.
func mountPrep(mode shared.AgentMode, log *slog.Logger) func() error {
	if mode != shared.ModeRAM || !boot.IsPID1() {
		return nil
	}
	// crc32c first: ext4 needs it to mount but only asks for it through the crypto API,
	// whose on-demand module loading has no modprobe to call here.
	return func() error { return boot.LoadModules(log, "crc32c_generic", "ext4") }
}

// rebootMachine restarts the machine: directly as PID 1 in RAM mode, through systemd
// on an installed OS (services stop cleanly, filesystems unmount).
func rebootMachine(mode shared.AgentMode) error {
	if mode == shared.ModeRAM && boot.IsPID1() {
		return boot.Reboot()
	}
	if out, err := exec.Command("systemctl", "reboot").CombinedOutput(); err != nil {
		return fmt.Errorf("systemctl reboot: %v: %s", err, out)
	}
	return nil
}
