package quota

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// firstProject is the lowest project ID handed out, above the IDs that
// admins tend to number by hand in /etc/projid.
const firstProject = 100000

var mu sync.Mutex // serialises project ID choice and directory creation

// Create makes the directory of a volume at dir, mode perm, capped at
// bytes when the filesystem can enforce it: a btrfs subvolume with a
// qgroup limit, or a directory with a project quota on ext4 and XFS
// mounted with prjquota. Otherwise the directory is still made, and the
// error returned wraps ErrUnsupported and says why; any other error means
// no directory was left behind.
func Create(dir string, perm os.FileMode, bytes int64) error {
	mu.Lock()
	defer mu.Unlock()
	if isBtrfs(filepath.Dir(dir)) {
		if err := btrfsCreate(dir); err != nil {
			return err
		}
		if err := os.Chmod(dir, perm); err != nil {
			btrfsDestroy(dir)
			return err
		}
		return btrfsLimit(dir, bytes)
	}
	if err := os.Mkdir(dir, perm); err != nil {
		return err
	}
	if err := os.Chmod(dir, perm); err != nil { // past the umask
		os.Remove(dir)
		return err
	}
	if err := Check(dir); err != nil {
		return err
	}
	id, err := freeProject(filepath.Dir(dir))
	if err != nil {
		os.Remove(dir)
		return err
	}
	if err := SetProject(dir, id); err != nil {
		return err
	}
	return SetLimit(dir, id, bytes)
}

// Resize changes the cap of a volume made by Create.
func Resize(dir string, bytes int64) error {
	if isSubvolume(dir) {
		return btrfsLimit(dir, bytes)
	}
	if err := Check(dir); err != nil {
		return err
	}
	id, err := Project(dir)
	if err != nil {
		return err
	}
	if id == 0 {
		return fmt.Errorf("%w: %s has no project ID (made before quotas were on)", ErrUnsupported, dir)
	}
	return SetLimit(dir, id, bytes)
}

// Remove deletes a volume made by Create, with its contents and its cap.
func Remove(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if isSubvolume(dir) {
		return btrfsDestroy(dir)
	}
	id, _ := Project(dir)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if id != 0 && Check(filepath.Dir(dir)) == nil {
		return SetLimit(filepath.Dir(dir), id, 0)
	}
	return nil
}

// freeProject picks a project ID that no directory in parent carries.
func freeProject(parent string) (uint32, error) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return 0, err
	}
	next := uint32(firstProject)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if id, err := Project(filepath.Join(parent, e.Name())); err == nil && id >= next {
			next = id + 1
		}
	}
	return next, nil
}
