package disk

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Discard tells the device that [start, start+length) holds no data (BLKDISCARD): an SSD
// or thin volume forgets the old contents at once. Devices without discard support answer
// EOPNOTSUPP, which callers treat as "nothing to do".
func Discard(f *os.File, start, length int64) error {
	rng := [2]uint64{uint64(start), uint64(length)}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKDISCARD, uintptr(unsafe.Pointer(&rng[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// RereadPartitions asks the kernel to read the partition table again (BLKRRPART), so that
// old partition nodes disappear and new ones appear without a reboot.
func RereadPartitions(f *os.File) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKRRPART, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// blkpg is the BLKPG ioctl, _IO(0x12, 105); x/sys has its argument types but not its number.
const blkpg = 0x1269

// AddPartition tells the kernel about partition pno at [start, start+length) bytes
// (BLKPG_ADD_PARTITION, as partx -a does), for kernels that did not find it themselves.
func AddPartition(f *os.File, pno int, start, length int64) error {
	part := unix.BlkpgPartition{Start: start, Length: length, Pno: int32(pno)}
	arg := unix.BlkpgIoctlArg{Op: unix.BLKPG_ADD_PARTITION, Datalen: int32(unsafe.Sizeof(part)),
		Data: (*byte)(unsafe.Pointer(&part))}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), blkpg, uintptr(unsafe.Pointer(&arg)))
	if errno != 0 {
		return errno
	}
	return nil
}
