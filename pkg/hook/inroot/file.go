package inroot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrTooLarge is returned by Read for a file over the caller's limit; the
// file is then not read at all (when its size says so) or not past the limit.
var ErrTooLarge = errors.New("file too large")

// ErrHardLinked is returned by Patch for a file with more than one link: the
// other name may be outside the rootfs (a host file on the same filesystem),
// and RESOLVE_IN_ROOT only sees the name it resolved.
var ErrHardLinked = errors.New("file has more than one hard link")

// ErrChanged is returned by Patch when the file no longer holds what the
// caller read, so the edit could land on other bytes.
var ErrChanged = errors.New("file changed since it was read")

// File is a regular file inside the rootfs. It is held as an O_PATH fd, so
// holding it opens nothing; reads and writes reopen that very inode through
// /proc/self/fd, never the path again.
type File struct {
	path *os.File
	name string
	st   unix.Stat_t // at OpenRegular
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
	return &File{path: p, name: name, st: st}, nil
}

// Size is the file's size when it was opened.
func (f *File) Size() int64 { return f.st.Size }

// Links is the file's hard link count when it was opened.
func (f *File) Links() uint64 { return uint64(f.st.Nlink) } //nolint:unconvert // Nlink is uint32 on arm64, 386, arm and riscv64

// reopen opens the held inode with flags.
func (f *File) reopen(flags int) (*os.File, error) {
	proc := "/proc/self/fd/" + strconv.Itoa(int(f.path.Fd()))
	fd, err := unix.Open(proc, flags|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("failed to reopen %q in rootfs: %w", f.name, err)
	}
	return os.NewFile(uintptr(fd), f.path.Name()), nil
}

// Read reads the whole file if it holds at most limit bytes, and returns
// ErrTooLarge without reading when its size is over limit (or when it grew
// past limit since it was opened: no more than limit+1 bytes are read).
// Reading does not trigger an overlayfs copy-up; only Patch does.
func (f *File) Read(limit int64) ([]byte, error) {
	if f.st.Size > limit {
		return nil, f.tooLarge(f.st.Size, limit)
	}
	rf, err := f.reopen(unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer rf.Close()
	b, err := io.ReadAll(io.LimitReader(rf, limit+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read %q in rootfs: %w", f.name, err)
	}
	if int64(len(b)) > limit {
		return nil, f.tooLarge(int64(len(b)), limit)
	}
	return b, nil
}

func (f *File) tooLarge(size, limit int64) error {
	return fmt.Errorf("%w: %q is %d bytes or more, over the %d-byte limit", ErrTooLarge, f.name, size, limit)
}

// Patch overwrites the bytes at off, which must still be old, with repl (of
// the same length) with one pwrite on the held inode. The file is never
// truncated or extended: its length, inode, owner and mode stay what the
// image had, and a write cut short leaves a mix of old and repl bytes in that
// range only. It refuses a file that now has another hard link or another
// size than the content read, or whose bytes at off are no longer old.
func (f *File) Patch(off int64, old, repl []byte) error {
	if len(old) != len(repl) {
		return fmt.Errorf("patch of %q changes its length (%d to %d bytes)", f.name, len(old), len(repl))
	}
	wf, err := f.reopen(unix.O_RDWR)
	if err != nil {
		return err
	}
	defer wf.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(wf.Fd()), &st); err != nil {
		return fmt.Errorf("failed to stat %q in rootfs: %w", f.name, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return &os.PathError{Op: "patch", Path: f.name, Err: ErrNotRegular}
	case st.Nlink > 1:
		return &os.PathError{Op: "patch", Path: f.name, Err: fmt.Errorf("%w (%d links)", ErrHardLinked, st.Nlink)}
	case st.Size != f.st.Size || off < 0 || off+int64(len(old)) > st.Size:
		return &os.PathError{Op: "patch", Path: f.name, Err: fmt.Errorf("%w: size %d, was %d", ErrChanged, st.Size, f.st.Size)}
	}
	cur := make([]byte, len(old))
	if _, err := wf.ReadAt(cur, off); err != nil {
		return fmt.Errorf("failed to read %q in rootfs: %w", f.name, err)
	}
	if !bytes.Equal(cur, old) {
		return &os.PathError{Op: "patch", Path: f.name, Err: fmt.Errorf("%w: bytes at %d", ErrChanged, off)}
	}
	if _, err := wf.WriteAt(repl, off); err != nil {
		return fmt.Errorf("failed to write %q in rootfs: %w", f.name, err)
	}
	return nil
}

// Close releases the file.
func (f *File) Close() error { return f.path.Close() }
