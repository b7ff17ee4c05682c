package store

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Adopt makes dir private (0700) when it is an empty directory owned by the
// caller that nobody else can write: what a Kubernetes hostPath volume of
// type DirectoryOrCreate (or the runtime, for a missing host path) leaves
// behind, 0755, before the plugin ever ran. Nothing can have been planted in
// it, so taking it over is safe; any other directory is left as it is, for
// Open to refuse. A missing dir is not an error (Open creates it). adopted
// says whether the mode was changed.
func Adopt(dir string) (bool, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state dir: %w", &os.PathError{Op: "open", Path: dir, Err: err})
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, fmt.Errorf("state dir: %w", &os.PathError{Op: "fstat", Path: dir, Err: err})
	}
	if st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 || st.Mode&0o7077 == 0 {
		return false, nil // someone else's, writable by others, or already private
	}
	if _, err := f.Readdirnames(1); !errors.Is(err, io.EOF) {
		return false, nil // not empty (or unreadable): not ours to take over
	}
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return false, fmt.Errorf("state dir: %w", &os.PathError{Op: "chmod", Path: dir, Err: err})
	}
	return true, nil
}
