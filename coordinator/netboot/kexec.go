package netboot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/rivetmetal/rivet/shared"
)

// AgentBoot is the RAM agent's boot for a machine at mac that kexecs from its installed
// OS instead of network-booting: the same kernel, initramfs and command line an iPXE
// script would give it, with a fresh ticket, and each file's digest, so the installed
// agent loads nothing it was not told of over the API. The caller has checked that the
// machine may have it (the API, with the machine's token, while it is re-imaged).
func (s *Server) AgentBoot(ctx context.Context, mac net.HardwareAddr) (*shared.KexecAnswer, error) {
	if s.cfg.Tickets == nil {
		return nil, errors.New("this coordinator's boot services issue no tickets")
	}
	kernel, err := s.bootFile(s.cfg.Kernel)
	if err != nil {
		return nil, err
	}
	initrd, err := s.bootFile(s.cfg.Initrd)
	if err != nil {
		return nil, err
	}
	ticket, err := s.cfg.Tickets.IssueTicket(ctx, mac)
	if err != nil {
		return nil, fmt.Errorf("issuing a boot ticket: %w", err)
	}
	cmdline, err := s.agentCmdline(mac, ticket)
	if err != nil {
		return nil, err
	}
	return &shared.KexecAnswer{Kernel: kernel, Initrd: initrd, Cmdline: cmdline}, nil
}

// bootFile describes one file of BootDir, hashed now: it may have been rebuilt since.
func (s *Server) bootFile(name string) (shared.BootFile, error) {
	f, err := os.OpenInRoot(s.cfg.BootDir, name)
	if err != nil {
		return shared.BootFile{}, fmt.Errorf("boot file %s: %w", name, rootCause(err))
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, shared.MaxBootFileSize+1))
	if err != nil {
		return shared.BootFile{}, fmt.Errorf("reading boot file %s: %w", name, rootCause(err))
	}
	if n > shared.MaxBootFileSize {
		return shared.BootFile{}, fmt.Errorf("boot file %s is larger than %d bytes", name, shared.MaxBootFileSize)
	}
	return shared.BootFile{URL: s.FileURL(name), SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}
