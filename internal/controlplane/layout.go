package controlplane

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// layoutVersion numbers the data dir's layout. A server refuses a data dir
// from a newer layout rather than misread it; older layouts are migrated
// here when there are any.
const layoutVersion = 1

// checkLayout records the layout in a new data dir and refuses one written
// by a newer Cloudless.
func checkLayout(dataDir string) error {
	path := filepath.Join(dataDir, "layout-version")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return pkiWrite(path, []byte(strconv.Itoa(layoutVersion)+"\n"))
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("%s is damaged (%q); if this data dir is Cloudless's, write %d into it", path, b, layoutVersion)
	}
	if v > layoutVersion {
		return fmt.Errorf("data dir %s was written by a newer Cloudless (layout %d; this binary knows %d): run that version, or `cloudless reset` to start over", dataDir, v, layoutVersion)
	}
	return nil
}
