// Package quota gives a directory a hard size limit, where the filesystem
// can enforce one (Create, Resize, Remove):
//   - ext4 and XFS: project quotas. The directory is tagged with a project
//     ID that its new files and subdirectories inherit, and the kernel caps
//     the blocks charged to that project. The filesystem must be mounted
//     with prjquota (ext4 also needs mkfs.ext4 -O quota,project or tune2fs
//     -O project,quota), and the kernel built with CONFIG_QUOTA (ext4) or
//     CONFIG_XFS_QUOTA.
//   - btrfs: a subvolume per directory, limited by its qgroup; quotas must
//     be on (btrfs quota enable).
//
// Linux only; it needs CAP_SYS_ADMIN.
//
// x/sys/unix has the syscall numbers but none of the structs, so the few
// that the kernel's UAPI headers define (linux/fs.h, linux/quota.h) are
// written out here.
package quota

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// linux/fs.h: struct fsxattr and its ioctls.
type fsxattr struct {
	Xflags, Extsize, Nextents, Projid, Cowextsize uint32
	_                                             [8]byte
}

const (
	fsIocFsgetxattr    = 0x801c581f
	fsIocFssetxattr    = 0x401c5820
	fsXflagProjinherit = 0x200
)

// linux/quota.h: struct if_dqblk and the quotactl commands.
type ifDqblk struct {
	BHardLimit, BSoftLimit, CurSpace  uint64
	IHardLimit, ISoftLimit, CurInodes uint64
	BTime, ITime                      uint64
	Valid                             uint32
	_                                 uint32
}

const (
	prjQuota   = 2
	qGetQuota  = 0x800007
	qSetQuota  = 0x800008
	qifBLimits = 1
	// blockSize is the unit of the block limits (QIF_DQBLKSIZE).
	blockSize = 1024
)

func qcmd(cmd, typ uint32) uintptr { return uintptr(cmd<<8 | typ&0xff) }

// ErrUnsupported is wrapped by every error that means "this filesystem
// cannot enforce a size here", as opposed to a failure to be retried.
var ErrUnsupported = errors.New("project quotas are not available")

// Project returns dir's project ID.
func Project(dir string) (uint32, error) {
	x, err := getxattr(dir)
	return x.Projid, err
}

// SetProject tags dir with project id, inherited by what is created in it.
func SetProject(dir string, id uint32) error {
	x, err := getxattr(dir)
	if err != nil {
		return err
	}
	x.Projid = id
	x.Xflags |= fsXflagProjinherit
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFssetxattr, uintptr(unsafe.Pointer(&x))); errno != 0 {
		return unsupported(fmt.Errorf("set project %d on %s: %w", id, dir, errno))
	}
	return nil
}

func getxattr(dir string) (fsxattr, error) {
	var x fsxattr
	f, err := os.Open(dir)
	if err != nil {
		return x, err
	}
	defer f.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFsgetxattr, uintptr(unsafe.Pointer(&x))); errno != 0 {
		return x, unsupported(fmt.Errorf("read the project of %s: %w", dir, errno))
	}
	return x, nil
}

// SetLimit caps project id, on the filesystem that holds path, at bytes
// (rounded up to whole KiB); 0 removes the cap.
func SetLimit(path string, id uint32, bytes int64) error {
	dev, err := Device(path)
	if err != nil {
		return err
	}
	q := ifDqblk{BHardLimit: uint64((bytes + blockSize - 1) / blockSize), Valid: qifBLimits}
	if err := quotactl(qSetQuota, dev, id, &q); err != nil {
		return fmt.Errorf("limit project %d on %s to %d bytes: %w", id, dev, bytes, err)
	}
	return nil
}

// Usage reports the bytes charged to project id and its limit (0: none).
func Usage(path string, id uint32) (used, limit int64, err error) {
	dev, err := Device(path)
	if err != nil {
		return 0, 0, err
	}
	var q ifDqblk
	if err := quotactl(qGetQuota, dev, id, &q); err != nil {
		return 0, 0, fmt.Errorf("read project %d on %s: %w", id, dev, err)
	}
	return int64(q.CurSpace), int64(q.BHardLimit) * blockSize, nil
}

func quotactl(cmd uint32, dev string, id uint32, q *ifDqblk) error {
	p, err := unix.BytePtrFromString(dev)
	if err != nil {
		return err
	}
	_, _, errno := unix.Syscall6(unix.SYS_QUOTACTL, qcmd(cmd, prjQuota), uintptr(unsafe.Pointer(p)), uintptr(id), uintptr(unsafe.Pointer(q)), 0, 0)
	if errno != 0 {
		return unsupported(errno)
	}
	return nil
}

// unsupported wraps ErrUnsupported into errors that mean the filesystem
// has no (enabled) project quotas.
func unsupported(err error) error {
	switch {
	case errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS),
		errors.Is(err, unix.ESRCH), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTBLK):
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return err
}

// Check reports whether sizes can be enforced under dir: nil, or an error
// wrapping ErrUnsupported that says why and what to do.
func Check(dir string) error {
	fs, opts, dev, err := mountOf(dir)
	if err != nil {
		return err
	}
	switch fs {
	case "btrfs":
		return nil // whether quotas are on shows when a limit is set
	case "ext4", "xfs":
	default:
		return fmt.Errorf("%w: %s is on %s; project quotas need ext4 or XFS", ErrUnsupported, dir, fs)
	}
	if !slices.Contains(opts, "prjquota") && !slices.Contains(opts, "pquota") {
		fix := "mount it with -o prjquota"
		if fs == "ext4" {
			fix = "enable the feature (tune2fs -O project,quota " + dev + ", unmounted) and mount it with -o prjquota"
		}
		return fmt.Errorf("%w: %s (%s on %s) is mounted without prjquota; %s", ErrUnsupported, dir, fs, dev, fix)
	}
	if _, err := getxattr(dir); err != nil {
		return err
	}
	return nil
}

// Device names the block device of the filesystem holding path, as
// quotactl wants it.
func Device(path string) (string, error) {
	_, _, dev, err := mountOf(path)
	return dev, err
}

// mountOf finds the mount holding path in /proc/self/mountinfo by device
// number: its filesystem type, its options (mount and superblock) and its
// source.
func mountOf(path string) (fstype string, opts []string, source string, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", nil, "", fmt.Errorf("stat %s: %w", path, err)
	}
	want := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", nil, "", err
	}
	defer f.Close()
	abs, _ := filepath.Abs(path)
	best := -1
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 6 || len(tail) < 3 || fields[2] != want {
			continue
		}
		// Bind mounts share a device: take the longest mount point
		// that contains path.
		mp := fields[4]
		if (strings.HasPrefix(abs, mp) && len(mp) > best) || best < 0 {
			best = len(mp)
			fstype, source = tail[0], tail[1]
			opts = append(strings.Split(fields[5], ","), strings.Split(tail[2], ",")...)
		}
	}
	if best < 0 {
		return "", nil, "", fmt.Errorf("%s: no mount with device %s in /proc/self/mountinfo", path, want)
	}
	return fstype, opts, source, sc.Err()
}
