package install

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// owner is the uid and gid a rewritten file keeps.
type owner struct{ UID, GID int }

// writeAtomic replaces dir/name with what fill writes: a temp file in dir
// whose name no runtime loads (tempPrefix, no CNI extension) and no runtime
// execs (not a plugin name), chmod (and chown when own is set), fsync,
// rename over the target, fsync of dir. A reader sees the old file or the
// new one, never a partial one; a killed writer leaves only a temp file
// (removed by removeStaleTemps). dir itself is never created or replaced.
func writeAtomic(dir, name string, mode os.FileMode, own *owner, fill func(io.Writer) error) error {
	f, err := os.CreateTemp(dir, tempPrefix+tempStem(name)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temp file in %s: %w", dir, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := fill(f); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if own != nil {
		if err := f.Chown(own.UID, own.GID); err != nil {
			return fmt.Errorf("chown %s: %w", tmp, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		ok = true
		return fmt.Errorf("rename %s over %s: %w", tmp, name, err)
	}
	ok = true
	return syncDir(dir)
}

// maxTempStem bounds the part of a temp file's name taken from its
// target, so that the temp name (prefix, stem, ".tmp-", random digits)
// stays under NAME_MAX (255) for any target name.
const maxTempStem = 200

func tempStem(name string) string {
	if len(name) > maxTempStem {
		return name[:maxTempStem]
	}
	return name
}

// syncDir makes a rename or unlink in dir durable.
func syncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return &os.PathError{Op: "fsync", Path: dir, Err: err}
	}
	return nil
}

// staleTempAge is how old a temp file must be before it is taken for the
// leftover of a killed installer (a write takes milliseconds; during a
// rolling update two installers may briefly run side by side).
const staleTempAge = time.Minute

// removeStaleTemps removes leakguard's temp files left in dir by a killed
// installer: regular files named tempPrefix*.tmp-* older than staleTempAge.
func removeStaleTemps(dir string, now time.Time) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, tempPrefix) || !strings.Contains(name, ".tmp-") || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil || now.Sub(info.ModTime()) < staleTempAge {
			continue
		}
		if os.Remove(filepath.Join(dir, name)) == nil {
			n++
		}
	}
	return n
}
