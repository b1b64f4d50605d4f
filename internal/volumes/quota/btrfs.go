package quota

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// On btrfs a volume is a subvolume, and its size limit the referenced-bytes
// limit of the subvolume's qgroup. btrfs counts qgroups by itself, with no
// CONFIG_QUOTA, but only once an operator turned quotas on for the
// filesystem (btrfs quota enable MOUNTPOINT): Cloudless does not do that
// behind their back, since qgroups cost on filesystems with many
// snapshots.

// linux/btrfs.h.
type btrfsVolArgs struct {
	Fd   int64
	Name [4088]byte
}

type btrfsQgroupLimitArgs struct {
	Qgroupid                                  uint64
	Flags, MaxRfer, MaxExcl, RsvRfer, RsvExcl uint64
}

const (
	btrfsIocSubvolCreate = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	btrfsIocSnapDestroy  = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
	btrfsIocQgroupLimit  = 0x8030942b // _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)
	btrfsLimitMaxRfer    = 1
	// btrfsFirstFreeObjectID is the inode number of every subvolume's root.
	btrfsFirstFreeObjectID = 256
)

func isBtrfs(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BTRFS_SUPER_MAGIC
}

func isSubvolume(path string) bool {
	var st unix.Stat_t
	return isBtrfs(path) && unix.Stat(path, &st) == nil && st.Ino == btrfsFirstFreeObjectID
}

func btrfsVolIoctl(parent, name string, req uintptr) error {
	if len(name) >= 4088 {
		return fmt.Errorf("name %q too long", name)
	}
	f, err := os.Open(parent)
	if err != nil {
		return err
	}
	defer f.Close()
	var args btrfsVolArgs
	copy(args.Name[:], name)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(unsafe.Pointer(&args))); errno != 0 {
		return errno
	}
	return nil
}

func btrfsCreate(dir string) error {
	if err := btrfsVolIoctl(filepath.Dir(dir), filepath.Base(dir), btrfsIocSubvolCreate); err != nil {
		return fmt.Errorf("create btrfs subvolume %s: %w", dir, err)
	}
	return nil
}

func btrfsDestroy(dir string) error {
	if err := btrfsVolIoctl(filepath.Dir(dir), filepath.Base(dir), btrfsIocSnapDestroy); err != nil {
		return fmt.Errorf("delete btrfs subvolume %s: %w", dir, err)
	}
	return nil
}

// btrfsLimit sets the referenced-bytes limit of the qgroup of the
// subvolume dir (0: none).
func btrfsLimit(dir string, bytes int64) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	args := btrfsQgroupLimitArgs{Flags: btrfsLimitMaxRfer, MaxRfer: uint64(bytes)}
	if bytes == 0 {
		args.MaxRfer = ^uint64(0)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), btrfsIocQgroupLimit, uintptr(unsafe.Pointer(&args))); errno != 0 {
		if errors.Is(errno, unix.ENOTCONN) || errors.Is(errno, unix.ENOENT) {
			return fmt.Errorf("%w: btrfs quotas are off on the filesystem holding %s; turn them on with `btrfs quota enable <mount point>`", ErrUnsupported, dir)
		}
		return fmt.Errorf("limit btrfs subvolume %s to %d bytes: %w", dir, bytes, errno)
	}
	return nil
}
