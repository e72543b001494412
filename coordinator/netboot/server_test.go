package netboot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp"
	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp/dhcptest"
	"github.com/rivetmetal/rivet/coordinator/netboot/tftp"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestServerBootsAMachine walks the boot flow through one Server running in a network
// namespace, with a client in another: full DHCP gives an address and undionly.kpxe to a
// BIOS PXE ROM, TFTP serves it, DHCP sends iPXE to its script, HTTP serves the script
// and the kernel; an installed machine's script sends it to disk.
func TestServerBootsAMachine(t *testing.T) {
	undionly := bytes.Repeat([]byte("iPXE"), 20000)
	diskMAC := dhcptest.MAC(2)
	var events []dhcp.Event
	evc := make(chan dhcp.Event, 100)
	s, p, c := bootPair(t, 20, func(cfg *Config, p *dhcptest.Pair) {
		os.WriteFile(filepath.Join(cfg.BootDir, "undionly.kpxe"), undionly, 0o644)
		cfg.HTTPAddr = p.ServerIP.String() + ":0"
		cfg.Mode, cfg.NoTFTP = ModeFull, false
		cfg.Pool = dhcp.Pool{Start: net.IPv4(10, 77, 20, 100), End: net.IPv4(10, 77, 20, 150), Router: p.ServerIP}
		cfg.Booter = dhcptest.NewBooter(map[string]shared.BootTarget{diskMAC.String(): shared.BootDisk})
		cfg.DHCPEvent = func(e dhcp.Event) { evc <- e }
	})
	offer := exchange(t, c, dhcptest.Request{XID: 1, Arch: 0, PXE: true})
	if offer.YourIPAddr.IsUnspecified() || offer.BootFileName != "undionly.kpxe" || !offer.ServerIPAddr.Equal(p.ServerIP) {
		t.Fatalf("PXE offer: %s", offer.Summary())
	}

	var got []byte
	err := dhcptest.Do(p.ClientNS, func() (err error) {
		tctx, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		got, err = tftp.Fetch(tctx, net.JoinHostPort(offer.ServerIPAddr.String(), "69"), offer.BootFileName, tftp.FetchOptions{BlockSize: 1468})
		return err
	})
	if err != nil || !bytes.Equal(got, undionly) {
		t.Fatalf("TFTP of %s: %d bytes, %v", offer.BootFileName, len(got), err)
	}

	ipxeOffer := exchange(t, c, dhcptest.Request{XID: 2, Arch: 0, PXE: true, IPXE: true})
	if !strings.HasPrefix(ipxeOffer.BootFileName, "http://"+p.ServerIP.String()+":") {
		t.Fatalf("iPXE offer: file %q", ipxeOffer.BootFileName)
	}
	hc := clientHTTP(p.ClientNS)
	script := fetch(t, hc, ipxeOffer.BootFileName)
	kernelURL := strings.Fields(lineWith(script, "kernel "))[1]
	if kernel := fetch(t, hc, kernelURL); len(kernel) != 1<<20 {
		t.Errorf("kernel from %s: %d bytes", kernelURL, len(kernel))
	}

	diskOffer := exchange(t, c, dhcptest.Request{XID: 3, MAC: diskMAC, Arch: 7, PXE: true, IPXE: true})
	if disk := fetch(t, hc, diskOffer.BootFileName); lastLine(disk) != "exit 1" || strings.Contains(disk, "kernel") {
		t.Errorf("installed machine's script:\n%s", disk)
	}

	// The hook saw each request and its reply, with the Booter's decision.
	for len(events) < 6 {
		select {
		case e := <-evc:
			events = append(events, e)
		case <-time.After(5 * time.Second):
			t.Fatalf("DHCP events: %+v", events)
		}
	}
	if st := s.DHCPStats(); st.Replies < 3 || st.Requests["bios"] < 2 || st.Requests["efi-x64"] < 1 {
		t.Errorf("DHCP stats %+v", st)
	}
	if st := s.TFTPStats(); st.Completed != 1 {
		t.Errorf("TFTP stats %+v", st)
	}
}

func exchange(t *testing.T, c *dhcptest.Client, r dhcptest.Request) *dhcpv4.DHCPv4 {
	t.Helper()
	var reply *dhcpv4.DHCPv4
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("a DHCP reply to xid %d", r.XID), func() (err error) {
		if err := c.Send(r.Bytes(), dhcptest.Broadcast); err != nil {
			t.Fatal(err)
		}
		reply, _, err = c.Receive(r.XID, 300*time.Millisecond)
		return err
	})
	return reply
}

// clientHTTP dials from inside namespace ns.
func clientHTTP(ns string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = dhcptest.Do(ns, func() error {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}}}
}

func fetch(t *testing.T, hc *http.Client, url string) string {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}
