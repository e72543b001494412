package imagetest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// RootFSStart and RootFSSize place the root partition AddRootFS makes: 1 MiB in, 64 MiB long.
const (
	RootFSStart = 1 << 20
	RootFSSize  = 64 << 20
)

// AddRootFS turns the image into one an installed OS could boot from, as far as the
// handoff step cares: an MBR with one Linux partition (RootFSStart, RootFSSize) holding
// an empty ext4 file system labelled label. The digest is recomputed. Needs mkfs.ext4.
func (img *Image) AddRootFS(label string) error {
	if img.Size < RootFSStart+RootFSSize {
		return fmt.Errorf("image of %d bytes is too small for a %d MiB root", img.Size, RootFSSize>>20)
	}
	f, err := os.OpenFile(img.Raw, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, RootFSStart), 0); err != nil {
		return err
	}
	if _, err := f.WriteAt(mbr(RootFSStart/512, RootFSSize/512), 0); err != nil {
		return err
	}
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", label, "-E", "offset="+strconv.Itoa(RootFSStart),
		img.Raw, strconv.Itoa(RootFSSize>>10)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	img.SHA256 = hex.EncodeToString(h.Sum(nil))
	return f.Sync()
}

// mbr is a boot sector with one Linux (0x83) partition; CHS fields are left zero, as
// Linux reads only the LBA ones.
func mbr(startLBA, sectors uint32) []byte {
	b := make([]byte, 512)
	e := b[446:462]
	e[4] = 0x83
	binary.LittleEndian.PutUint32(e[8:], startLBA)
	binary.LittleEndian.PutUint32(e[12:], sectors)
	b[510], b[511] = 0x55, 0xAA
	return b
}
