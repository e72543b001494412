package boot

import (
	"context"
	"time"

	"golang.org/x/sys/unix"
)

// waitForEntropy blocks until the kernel's random number generator is seeded. Early in
// boot on a machine without a trusted hardware RNG (qemu TCG has no RDRAND) it is not,
// and the DHCP client's transaction IDs and every TLS handshake would wait on it,
// spinning. A blocking getrandom makes the kernel seed itself from CPU jitter at once.
func waitForEntropy(ctx context.Context, out *progress) error {
	done := make(chan error, 1)
	go func() {
		var b [1]byte
		for {
			_, err := unix.Getrandom(b[:], 0)
			if err != unix.EINTR {
				done <- err
				return
			}
		}
	}()
	slow := time.NewTimer(2 * time.Second)
	defer slow.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-slow.C:
			out.printf("waiting for the kernel's random number generator to be seeded")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
