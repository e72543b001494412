package netboot

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/rivetmetal/rivet/coordinator/netboot/throttle"
)

// HTTP paths of the boot handler.
const (
	scriptPath = "/boot.ipxe"  // ?mac=${net0/mac}: the script for one machine
	scriptDir  = "/boot/"      // /boot/{mac}.ipxe: the same, with the MAC in the path (what DHCP hands out)
	filesPath  = "/boot/files" // /boot/files/{name}: kernel, initramfs, iPXE binaries from BootDir
)

func (s *Server) newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+scriptPath, s.serveScriptQuery)
	mux.HandleFunc("GET "+scriptDir+"{script}", s.serveScriptPath)
	mux.HandleFunc("GET "+filesPath+"/{name}", s.serveFile)
	return mux
}

// ScriptURL is the URL of a machine's iPXE script, which proxyDHCP hands to iPXE.
func (s *Server) ScriptURL(mac net.HardwareAddr) string {
	return s.bootURL() + scriptDir + strings.ReplaceAll(mac.String(), ":", "-") + ".ipxe"
}

// FileURL is the URL of a file in BootDir, which proxyDHCP hands to UEFI HTTP boot.
func (s *Server) FileURL(name string) string {
	return s.bootURL() + filesPath + "/" + name
}

func (s *Server) serveScriptQuery(w http.ResponseWriter, r *http.Request) {
	s.serveScript(w, r, r.URL.Query().Get("mac"))
}

func (s *Server) serveScriptPath(w http.ResponseWriter, r *http.Request) {
	mac, ok := strings.CutSuffix(r.PathValue("script"), ".ipxe")
	if !ok {
		http.NotFound(w, r) // not a script path
		return
	}
	s.serveScript(w, r, mac)
}

// serveScript always answers a script path with 200 and a script, even for a MAC it
// cannot parse: an HTTP error makes some UEFI firmwares stop in their menu
// (siderolabs/sidero#558), while a script can print why and exit with failure.
func (s *Server) serveScript(w http.ResponseWriter, r *http.Request, macText string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store") // the answer changes with the machine's state
	mac, err := net.ParseMAC(macText)
	if err != nil || len(mac) != 6 {
		s.quiet.Warn("boot script asked for a bad MAC", "mac", throttle.Quote(macText), "remote", r.RemoteAddr)
		fmt.Fprintf(w, "#!ipxe\necho Rivet: %q is not a MAC address; ask for /boot.ipxe?mac= and the MAC of the booting NIC\nexit 1\n",
			strings.Map(printable, macText))
		return
	}
	script, target, id := s.renderScript(r, mac)
	// Keyed by MAC and target: a repeat of the same answer is throttled, a changed
	// decision (agent, then disk after the install) is always logged.
	s.quiet.InfoPer(mac.String()+" "+string(target), "boot script", "mac", mac.String(), "machine", id, "target", target, "remote", r.RemoteAddr)
	w.Write(script)
}

func printable(r rune) rune {
	if r < ' ' || r > '~' || r == '"' || r == '$' {
		return '?'
	}
	return r
}

// serveFile serves one file of BootDir with Range and conditional requests
// (http.ServeContent). An *os.File body lets net/http hand the copy to sendfile(2).
// The ETag is size and modification time: a rebuilt initramfs gets a new one.
// The file is opened inside an os.Root of BootDir: a symlink may point within the
// directory, never out of it.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !validFileName(name) {
		http.Error(w, "bad boot file name", http.StatusBadRequest)
		return
	}
	f, err := os.OpenInRoot(s.cfg.BootDir, name)
	if err != nil {
		s.quiet.Warn("boot file not found", "file", throttle.Quote(name), "dir", s.cfg.BootDir, "remote", r.RemoteAddr, "err", rootCause(err))
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	if strings.HasSuffix(name, ".efi") {
		h.Set("Content-Type", "application/efi") // what UEFI HTTP boot expects of an EFI binary
	}
	h.Set("ETag", fmt.Sprintf(`"%x-%x"`, st.Size(), st.ModTime().UnixNano()))
	h.Set("Cache-Control", "no-cache") // cache, but revalidate: the file may be rebuilt
	http.ServeContent(w, r, name, st.ModTime(), f)
}

// rootCause is an open error without its path, which is the client's.
func rootCause(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// validFileName accepts one plain path element: no directories, no "..", no hidden
// files. Symlinks are followed only while they stay inside BootDir (serveFile): keep
// the kernel and initramfs there, or bind-mount the build cache in.
func validFileName(name string) bool {
	if name == "" || len(name) > 255 || name[0] == '.' {
		return false
	}
	for _, r := range name {
		if r == '/' || r == '\\' || r < ' ' || r == 0x7f {
			return false
		}
	}
	return true
}
