package netboot

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"
	"text/template"

	"github.com/rivetmetal/rivet/shared"
)

// The iPXE scripts. Every path out of a script that does not boot the agent ends in
// `exit 1`: iPXE's bare `exit` returns success, and UEFI firmware treats a boot option
// that succeeded as done and stops in its boot manager instead of trying the disk
// (tinkerbell/tinkerbell#984, netbootxyz/netboot.xyz#1276). BIOS ignores the status and
// moves on to the next boot device either way.
//
// `initrd=NAME` on the kernel line is what makes a UEFI kernel's EFI stub find the
// initramfs that iPXE loaded (NAME is the last part of its URL); BIOS ignores it.
var scripts = template.Must(template.New("").Parse(`
{{- define "agent" -}}
#!ipxe
# Rivet: {{.MAC}}{{with .Machine}} ({{.}}){{end}} boots the Rivet agent.
echo Rivet: loading the agent for {{.MAC}}
kernel {{.FilesURL}}/{{.Kernel}} initrd={{.Initrd}} {{.Cmdline}} || goto failed
initrd {{.FilesURL}}/{{.Initrd}} || goto failed
boot || goto failed
:failed
echo Rivet: could not load the agent from {{.FilesURL}}; handing back to the firmware
exit 1
{{end -}}

{{- define "disk" -}}
#!ipxe
# Rivet: {{.MAC}}{{with .Machine}} ({{.}}){{end}} is installed: it boots from its local disk.
echo Rivet: {{.MAC}} is installed; handing back to the firmware to boot the local disk
exit 1
{{end -}}

{{- define "none" -}}
#!ipxe
# Rivet: {{.MAC}}{{with .Machine}} ({{.}}){{end}} is retired: Rivet does not boot it.
echo Rivet: {{.MAC}} is retired; handing back to the firmware
exit 1
{{end -}}

{{- define "error" -}}
#!ipxe
# Rivet cannot boot {{.MAC}}: {{.Error}}
echo Rivet: cannot boot {{.MAC}}: {{.Error}}
exit 1
{{end -}}
`))

// scriptData fills the templates.
type scriptData struct {
	MAC      string
	Machine  shared.MachineID
	FilesURL string // base URL of the boot files
	Kernel   string
	Initrd   string
	Cmdline  string
	Error    string
}

// agentCmdline is the kernel command line of the RAM agent. The ticket travels in clear
// text on the boot LAN (as the script does), which is why it is one-time and only
// handed to the machine the boot services expect (ticketFor); the agent checks the
// coordinator's certificate against rivet.ca.
func (s *Server) agentCmdline(mac net.HardwareAddr, ticket string) (string, error) {
	args := []string{"console=tty0", "console=ttyS0,115200n8",
		// pxelinux's convention: tells the agent which NIC booted.
		"BOOTIF=01-" + strings.ReplaceAll(mac.String(), ":", "-")}
	if urls := s.cfg.APIURLs(); len(urls) > 0 {
		args = append(args, shared.CmdlineURL+"="+strings.Join(urls, ","))
	}
	if fp := s.cfg.CAFingerprint(); fp != "" {
		args = append(args, shared.CmdlineCA+"="+fp)
	}
	if ticket != "" {
		args = append(args, shared.CmdlineTicket+"="+ticket)
	}
	if s.cfg.Cmdline != "" {
		args = append(args, strings.Fields(s.cfg.Cmdline)...)
	}
	for _, a := range args {
		if !scriptSafe(a) {
			key, _, _ := strings.Cut(a, "=")
			return "", fmt.Errorf("kernel argument %s holds a space, quote, backslash or $, which an iPXE script cannot carry", key)
		}
	}
	return strings.Join(args, " "), nil
}

// scriptSafe reports whether s can stand in an iPXE command line as it is: iPXE splits
// on white space and expands ${...}, and has no quoting.
func scriptSafe(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '"' || r == '\'' || r == '\\' || r == '$' {
			return false
		}
	}
	return true
}

// renderScript returns the iPXE script for one machine, asked for by r.
func (s *Server) renderScript(r *http.Request, mac net.HardwareAddr) (script []byte, target shared.BootTarget, id shared.MachineID) {
	target, id = s.bootFor(mac)
	d := scriptData{MAC: mac.String(), Machine: id, FilesURL: s.bootURL() + filesPath,
		Kernel: s.cfg.Kernel, Initrd: s.cfg.Initrd}
	name := string(target)
	if target == shared.BootAgent {
		cmdline, err := s.agentCmdline(mac, s.ticketFor(r, mac))
		if err != nil {
			s.log.Error("cannot render the agent's boot script", "mac", mac.String(), "err", err)
			name, d.Error = "error", "the boot configuration is invalid; see the coordinator log"
		}
		d.Cmdline = cmdline
	}
	var b bytes.Buffer
	if err := scripts.ExecuteTemplate(&b, name, d); err != nil {
		// Only a bug in the templates gets here; still hand the firmware a way out.
		s.log.Error("boot script template failed", "template", name, "err", err)
		return []byte("#!ipxe\nexit 1\n"), target, id
	}
	return b.Bytes(), target, id
}

// bootFor asks the Booter; anything it does not know boots the agent (discovery).
func (s *Server) bootFor(mac net.HardwareAddr) (shared.BootTarget, shared.MachineID) {
	if s.cfg.Booter == nil {
		return shared.BootAgent, ""
	}
	target, id := s.cfg.Booter.BootFor(mac)
	if !target.Valid() {
		target = shared.BootAgent
	}
	return target, id
}
