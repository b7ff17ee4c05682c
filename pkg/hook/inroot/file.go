package inroot

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// File is a regular file inside the rootfs. It is held as an O_PATH fd, so
// holding it opens nothing; reads and writes reopen that very inode through
// /proc/self/fd, never the path again.
type File struct {
	path *os.File
	name string
}

// OpenRegular resolves name in the root. O_PATH never calls a device
// driver's open and never blocks on a FIFO; only a regular file is returned.
func (r *Root) OpenRegular(name string) (*File, error) {
	p, err := r.openat2(name, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(p.Fd()), &st); err != nil {
		p.Close()
		return nil, fmt.Errorf("failed to stat %q in rootfs: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		p.Close()
		return nil, &os.PathError{Op: "open", Path: name, Err: ErrNotRegular}
	}
	return &File{path: p, name: name}, nil
}

// reopen opens the held inode with flags.
func (f *File) reopen(flags int) (*os.File, error) {
	proc := "/proc/self/fd/" + strconv.Itoa(int(f.path.Fd()))
	fd, err := unix.Open(proc, flags|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("failed to reopen %q in rootfs: %w", f.name, err)
	}
	return os.NewFile(uintptr(fd), f.path.Name()), nil
}

// ReadAll reads the whole file. Reading does not trigger an overlayfs
// copy-up; only Rewrite does.
func (f *File) ReadAll() ([]byte, error) {
	rf, err := f.reopen(unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer rf.Close()
	b, err := io.ReadAll(rf)
	if err != nil {
		return nil, fmt.Errorf("failed to read %q in rootfs: %w", f.name, err)
	}
	return b, nil
}

// Rewrite replaces the file's content in place (pwrite + ftruncate on the
// same inode), so owner, mode and inode stay what the image had.
func (f *File) Rewrite(content []byte) error {
	wf, err := f.reopen(unix.O_WRONLY)
	if err != nil {
		return err
	}
	defer wf.Close()
	if _, err := wf.WriteAt(content, 0); err != nil {
		return fmt.Errorf("failed to write %q in rootfs: %w", f.name, err)
	}
	if err := wf.Truncate(int64(len(content))); err != nil {
		return fmt.Errorf("failed to truncate %q in rootfs: %w", f.name, err)
	}
	return nil
}

// Close releases the file.
func (f *File) Close() error { return f.path.Close() }
