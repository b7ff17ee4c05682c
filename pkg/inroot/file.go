package inroot

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// File is a regular file inside the rootfs, open for reading and writing.
type File struct {
	f *os.File
}

// OpenRegular opens name for in-place editing. The path is first opened
// O_PATH, which never triggers a device driver's open or blocks on a FIFO;
// only when that inode is a regular file is it reopened read-write through
// its own fd, so the inode checked is the inode written.
func (r *Root) OpenRegular(name string) (*File, error) {
	p, err := r.openat2(name, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(p.Fd()), &st); err != nil {
		return nil, fmt.Errorf("failed to stat %q in rootfs: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, &os.PathError{Op: "open", Path: name, Err: ErrNotRegular}
	}
	proc := "/proc/self/fd/" + strconv.Itoa(int(p.Fd()))
	fd, err := unix.Open(proc, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("failed to reopen %q in rootfs for writing: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), p.Name())
	var st2 unix.Stat_t
	if err := unix.Fstat(fd, &st2); err != nil || st2.Ino != st.Ino || st2.Dev != st.Dev {
		f.Close()
		return nil, fmt.Errorf("%q in rootfs changed while being opened", name)
	}
	return &File{f: f}, nil
}

// ReadAll reads the whole file from the start.
func (f *File) ReadAll() ([]byte, error) {
	b, err := io.ReadAll(io.NewSectionReader(f.f, 0, 1<<62))
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", f.f.Name(), err)
	}
	return b, nil
}

// Rewrite replaces the file's content through the same fd, so the inode,
// owner and mode stay what the image had.
func (f *File) Rewrite(content []byte) error {
	if _, err := f.f.WriteAt(content, 0); err != nil {
		return fmt.Errorf("failed to write %s: %w", f.f.Name(), err)
	}
	if err := f.f.Truncate(int64(len(content))); err != nil {
		return fmt.Errorf("failed to truncate %s: %w", f.f.Name(), err)
	}
	return nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }
