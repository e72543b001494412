package shared

import (
	"context"
	"fmt"
	"net/http"
)

// An installed machine being re-imaged boots the Rivet agent again without the
// firmware's POST: its installed agent asks a coordinator, over the API (so over TLS
// pinned by the cluster CA, with its machine token), for the RAM agent's kernel,
// initramfs and kernel command line, the last with a fresh one-time boot ticket, and
// kexecs into them once both files match their digests.

// BootFile is one file of the RAM agent's boot, from a coordinator's boot HTTP server.
type BootFile struct {
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// KexecAnswer is what the installed agent kexecs into.
type KexecAnswer struct {
	Kernel  BootFile `json:"kernel"`
	Initrd  BootFile `json:"initrd"`
	Cmdline string   `json:"cmdline"` // holds a boot ticket: a secret, never logged
}

// MaxBootFileSize bounds what an agent downloads to kexec.
const MaxBootFileSize = 512 << 20

// Validate checks the answer.
func (k *KexecAnswer) Validate() error {
	for name, f := range map[string]BootFile{"kernel": k.Kernel, "initrd": k.Initrd} {
		if len(f.URL) == 0 || len(f.URL) > 2048 || !sha256Pattern.MatchString(f.SHA256) || f.Size <= 0 || f.Size > MaxBootFileSize {
			return fmt.Errorf("kexec: %s: want a URL, a sha256 and a size of at most %d bytes", name, MaxBootFileSize)
		}
	}
	if len(k.Cmdline) == 0 || len(k.Cmdline) > 4096 {
		return fmt.Errorf("kexec: the command line is empty or longer than 4096 bytes")
	}
	return nil
}

// Kexec asks for the RAM agent's boot of machine id; only a machine being re-imaged gets
// it.
func (c *Client) Kexec(ctx context.Context, id MachineID) (*KexecAnswer, error) {
	var k KexecAnswer
	return &k, c.Do(ctx, http.MethodPost, MachinePath(PathMachineKexec, id), nil, &k)
}
