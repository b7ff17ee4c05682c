package install

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Binary names, as built into bin/ and shipped in the image.
const (
	HookBinary = "leakguard-hook"
	NRIBinary  = "leakguard-nri"
	// HookPolicyFile is the hook's policy (Options.HookPolicy) beside it:
	// the runtime runs the hook on the host, so the policy it reads must
	// be a host file too (leakguard-nri passes it as --config).
	HookPolicyFile = "leakguard-hook.json"
)

// maxBinarySize caps a binary to install (ours are a few MiB).
const maxBinarySize = 256 << 20

// binaryMode is what runtimes need to exec a plugin or hook; policyMode a
// config file's.
const (
	binaryMode os.FileMode = 0o755
	policyMode os.FileMode = 0o644
)

// binary is one file to install: Src (in the --from dir) to Dir/Name.
type binary struct {
	Src, Dir, Name string
	// MakeDir: Dir is leakguard's own (the hook dir) and may be created;
	// the CNI bin dir is the runtime's and is waited for instead.
	MakeDir bool
	// Mode is the installed file's (binaryMode when 0).
	Mode os.FileMode
	// Check, when set, validates the source before it is installed.
	Check func(src string) error
}

func (b binary) dst() string { return filepath.Join(b.Dir, b.Name) }

func (b binary) mode() os.FileMode {
	if b.Mode == 0 {
		return binaryMode
	}
	return b.Mode
}

// fileID tells whether a file changed since it was last checked, without
// reading it: a re-check every few seconds must not hash megabytes.
type fileID struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime unix.Timespec
	Mode         uint32
}

func idOf(st *unix.Stat_t) fileID {
	return fileID{Dev: st.Dev, Ino: st.Ino, Size: st.Size, Mtime: st.Mtim, Ctime: st.Ctim, Mode: st.Mode}
}

// binaries remembers, per destination, its identity and its source's when
// it was last verified or written, and per source its content hash.
type binaries struct {
	verified map[string]verified
	srcSum   map[string]srcSum
}

type verified struct{ dst, src fileID }

type srcSum struct {
	id  fileID
	sum [sha256.Size]byte
}

func newBinaries() *binaries {
	return &binaries{verified: map[string]verified{}, srcSum: map[string]srcSum{}}
}

// ensure makes b.dst() a 0755 regular file with b.Src's content, replacing
// it atomically when it differs; installed says whether it wrote.
func (bs *binaries) ensure(b binary) (bool, error) {
	if b.MakeDir {
		if err := os.MkdirAll(b.Dir, 0o755); err != nil {
			return false, fmt.Errorf("create %s: %w", b.Dir, err)
		}
	}
	// A dir made by someone else is checked too: what is installed there
	// runs as root, so no one but its owner may swap it.
	if err := checkDir(b.Dir); err != nil {
		return false, err
	}
	var st, sst unix.Stat_t
	if err := unix.Stat(b.Src, &sst); err != nil {
		return false, &os.PathError{Op: "stat", Path: b.Src, Err: err}
	}
	exists := unix.Lstat(b.dst(), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG
	if exists && bs.verified[b.dst()] == (verified{dst: idOf(&st), src: idOf(&sst)}) {
		return false, nil
	}
	sum, err := bs.sourceSum(b.Src)
	if err != nil {
		return false, err
	}
	if b.Check != nil {
		if err := b.Check(b.Src); err != nil {
			return false, err
		}
	}
	if exists && os.FileMode(st.Mode)&os.ModePerm == b.mode() {
		if got, _, err := hashFile(b.dst()); err == nil && got == sum {
			bs.verified[b.dst()] = verified{dst: idOf(&st), src: idOf(&sst)}
			return false, nil
		}
	}
	src, err := openRegular(b.Src)
	if err != nil {
		return false, err
	}
	defer src.Close()
	h := sha256.New()
	err = writeAtomic(b.Dir, b.Name, b.mode(), nil, func(w io.Writer) error {
		n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(src, maxBinarySize+1))
		if err == nil && n > maxBinarySize {
			err = fmt.Errorf("%s is over %d bytes", b.Src, maxBinarySize)
		}
		return err
	})
	if err != nil {
		return false, err
	}
	if !bytes.Equal(h.Sum(nil), sum[:]) {
		// The source changed while it was copied: check again next time.
		delete(bs.srcSum, b.Src)
		return true, fmt.Errorf("%s changed while it was copied", b.Src)
	}
	// Not marked verified by a stat of the path now: whatever changed the
	// file since the rename (an agent, a truncating write) would be taken
	// for our copy from then on. The next pass hashes it once.
	delete(bs.verified, b.dst())
	return true, nil
}

func (bs *binaries) sourceSum(src string) ([sha256.Size]byte, error) {
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return [sha256.Size]byte{}, &os.PathError{Op: "stat", Path: src, Err: err}
	}
	if c, ok := bs.srcSum[src]; ok && c.id == idOf(&st) {
		return c.sum, nil
	}
	sum, id, err := hashFile(src)
	if err != nil {
		return sum, err
	}
	bs.srcSum[src] = srcSum{id: id, sum: sum}
	return sum, nil
}

// present tells whether dst is an executable regular file.
func present(dst string) bool {
	var st unix.Stat_t
	return unix.Stat(dst, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0
}

// openRegular opens path for reading without blocking on a FIFO or device;
// only a regular file is returned.
func openRegular(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	return f, nil
}

func hashFile(path string) ([sha256.Size]byte, fileID, error) {
	var sum [sha256.Size]byte
	f, err := openRegular(path)
	if err != nil {
		return sum, fileID{}, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return sum, fileID{}, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, maxBinarySize+1)); err != nil {
		return sum, fileID{}, fmt.Errorf("read %s: %w", path, err)
	}
	copy(sum[:], h.Sum(nil))
	return sum, idOf(&st), nil
}

// removeBinary removes dst; a missing file is not an error.
func removeBinary(dst string) error {
	err := os.Remove(dst)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		if err == nil {
			return syncDir(filepath.Dir(dst))
		}
		return nil
	}
	return err
}
