// Package tftp is Rivet's read-only TFTP server, and a small client to test and bench it.
//
// TFTP carries exactly one file in Rivet's boot flow: the iPXE binary that PXE firmware
// chainloads (undionly.kpxe for BIOS, snponly.efi or ipxe.efi for UEFI, at most 1 MB).
// Everything after it travels over HTTP. What matters is therefore: hundreds of machines
// fetching the same small file at once, firmware clients that are picky about the
// protocol, and hostile or broken packets on the boot LAN.
//
// Protocol: RFC 1350 read requests in octet mode; RFC 2347 options with blksize (2348),
// tsize and timeout (2349) and windowsize (7440). Write requests and netascii/mail mode
// are answered with an ERROR packet. Block numbers roll over from 65535 to 0.
//
// Decisions:
//
//   - blksize is capped by Config.MaxBlockSize (default 1468, a 1500-byte Ethernet MTU
//     minus IP, UDP and TFTP headers). The server cannot learn a client's path MTU before
//     the first block, and a fragmented block on a busy boot LAN is lost whenever any
//     fragment is. The caller knows the boot interface: on jumbo frames it sets
//     MaxBlockSize to MTU-32 (up to 65464).
//   - windowsize is capped by Config.MaxWindowSize (default 64). Duplicate ACKs are
//     ignored (no Sorcerer's Apprentice); an ACK inside the window resends from the block
//     after it at once; lost packets otherwise wait for the timer.
//   - Retransmission starts at Config.Timeout (or the client's timeout option) and doubles
//     up to 8 times that; after Config.Retries resends the transfer is abandoned and its
//     slot freed.
//   - Each transfer runs on its own goroutine and UDP socket (its own TID, as RFC 1350
//     says), bounded by Config.MaxTransfers. A request beyond the limit is dropped without
//     an answer, because firmware retries an unanswered request but aborts on an ERROR.
//   - The boot directory is an os.Root: no path can leave it, including through symlinks.
//     Names with "..", a leading "/", backslashes or control characters are refused as
//     "access violation" before any lookup; Rivet's proxyDHCP hands out plain relative
//     names.
//   - Files up to Config.CacheFileSize are served from memory, keyed by path, mtime and
//     size, so a rack booting at once reads the iPXE binary from disk once.
//   - Bad packets never stop the server: a malformed request is answered with ERROR 4,
//     stray DATA/ACK on the request port with ERROR 5, an ERROR with silence.
//
// Metrics: Stats returns counters for the caller's Prometheus collector and
// Config.OnTransfer reports each request as it ends; the package registers nothing.
package tftp
