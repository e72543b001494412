// Command rivet-mkinitramfs builds the RAM agent's boot files (vmlinuz and a
// reproducible initramfs.zst whose /init is rivet-agent). Build time only.
//
//	rivet-mkinitramfs --agent bin/rivet-agent --out build/initramfs
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rivetmetal/rivet/initramfs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "rivet-mkinitramfs:", err)
		os.Exit(1)
	}
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rivet-mkinitramfs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		agent       = fs.String("agent", "", "path of the rivet-agent binary; becomes /init (required)")
		out         = fs.String("out", "build/initramfs", "output directory for vmlinuz, initramfs.zst and initramfs.json")
		kernelCache = fs.String("kernel-cache", "build/kernel", "cache for the Debian kernel package (fetched with apt-get download)")
		kernelDir   = fs.String("kernel-dir", "", "an already unpacked linux-image .deb tree (skips apt)")
		modules     = fs.String("modules", strings.Join(initramfs.DefaultModules, ","), "comma-separated driver modules (dependencies are added)")
		extra       = fs.String("extra-modules", "", "comma-separated modules to add to --modules")
		pciIDs      = fs.String("pci-ids", "", "path of pci.ids (default: Debian's /usr/share/misc/pci.ids)")
		asJSON      = fs.Bool("json", false, "print the result as JSON")
		verbose     = fs.Bool("v", false, "debug logs")
		firmware    listFlag
	)
	fs.Var(&firmware, "firmware-dir", "extra directory searched for module firmware, e.g. /lib/firmware (repeatable)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: rivet-mkinitramfs --agent PATH [flags]\n\n"+
			"Builds vmlinuz and a reproducible initramfs.zst for the Rivet RAM agent from Debian's\n"+
			"kernel package (%s's dependency), without installing the kernel.\n\nFlags:\n", initramfs.KernelMetapackage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *agent == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("--agent is required and no positional arguments are accepted")
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	var kernel initramfs.Kernel
	var err error
	if *kernelDir != "" {
		kernel, err = initramfs.OpenKernel(*kernelDir)
	} else {
		kernel, err = initramfs.FetchKernel(ctx, log, *kernelCache)
	}
	if err != nil {
		return err
	}
	res, err := initramfs.Build(ctx, initramfs.Spec{
		Agent:        *agent,
		Kernel:       kernel,
		Modules:      splitList(*modules + "," + *extra),
		FirmwareDirs: firmware,
		PCIIDs:       *pciIDs,
		OutDir:       *out,
		Log:          log,
	})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(stdout, "kernel    %s (%s, %.1f MB)\ninitramfs %s (%.1f MB, %.1f MB uncompressed, %d modules)\nsha256    %s\n",
		res.KernelPath, res.KernelRelease, mb(res.KernelSize), res.InitramfsPath,
		mb(res.CompressedSize), mb(res.ArchiveSize), len(res.Modules), res.SHA256)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }
