// Package nspin keeps a pod netns reachable by bind-mounting it under a pin
// directory, so that a DEL which finds the runtime's netns path gone can still
// enter the namespace and clean it up from the inside.
//
// A pin is trusted only by identity: Open returns the namespace at the pin
// path only if its nsfs device and inode are the recorded ones, and Remove
// unmounts only an nsfs mount of the recorded namespace inside a directory
// that Pin set up. A pin keeps its netns alive until it is removed, so it must
// not outlive the DEL or GC of its attachment.
package nspin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

// Pin is a bind mount of a pod netns made by Pin: where it is, and the
// identity of the namespace it must still hold to be trusted.
type Pin struct {
	Path  string           `json:"path"`
	Netns nsident.Identity `json:"netns"`
}

// maxStacked bounds how many mounts Pin or Remove peel off one pin path.
const maxStacked = 8

// ErrGone means nothing is pinned at the path: it is missing or is an
// unmounted leftover file.
var ErrGone = errors.New("netns pin is gone")

// ErrHostNetns means the namespace to pin is the caller's own: pinning it is
// never useful and rescuing it would act on the host.
var ErrHostNetns = errors.New("refusing to pin the caller's own netns")

// ReplacedError means the pin path holds a network namespace other than the
// recorded one. It is not trusted and is left alone.
type ReplacedError struct {
	Path     string
	Recorded nsident.Identity
	Found    nsident.Identity
}

func (e *ReplacedError) Error() string {
	return fmt.Sprintf("netns pin %s holds netns %s, not the recorded %s", e.Path, e.Found, e.Recorded)
}

// ValidName reports whether name can be a pin file name: one non-empty path
// component of at most 255 bytes from [A-Za-z0-9._%:+=@-], not starting with
// a dot (so never "." or ".."). Callers derive it from the attachment key; see
// NameFor.
func ValidName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("pin name %q: must be 1 to 255 bytes", name)
	}
	if name[0] == '.' {
		return fmt.Errorf("pin name %q: must not start with a dot", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("._%:+=@-", c) >= 0:
		default:
			return fmt.Errorf("pin name %q: byte %q not allowed", name, c)
		}
	}
	return nil
}

// New bind-mounts the netns at netnsPath onto pinDir/name and returns the
// pin with the identity of the pinned namespace, verified equal to the
// source's. pinDir is created (0700) if needed and made a shared mount point
// of its own (see ensureDir).
//
// The namespace is opened once and the mount is made from that open fd, so
// the pin is the namespace whose identity was read even if netnsPath changes
// meanwhile. Pinning is idempotent: if pinDir/name already pins the same
// netns, it is returned as is. If it pins another netns, that pin is
// superseded: it is unmounted (it is an nsfs mount in our pin directory, and
// the name belongs to the caller's attachment, so it can only be a stale pin
// of an earlier sandbox of the same attachment) and replaced. Anything else
// at the path (a directory, a symlink, a non-nsfs mount) is an error and is
// not touched.
func New(netnsPath, pinDir, name string) (Pin, error) {
	if err := ValidName(name); err != nil {
		return Pin{}, err
	}
	if !filepath.IsAbs(pinDir) {
		return Pin{}, fmt.Errorf("pin dir %q is not absolute", pinDir)
	}
	pinDir = filepath.Clean(pinDir)
	path := filepath.Join(pinDir, name)

	src, err := os.OpenFile(netnsPath, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Pin{}, fmt.Errorf("open netns %s to pin it: %w", netnsPath, err)
	}
	defer src.Close()
	want, err := nsident.OfFd(src.Fd())
	if err != nil {
		return Pin{}, fmt.Errorf("netns %s: %w", netnsPath, err)
	}
	if host, err := nsident.Current(); err != nil {
		return Pin{}, fmt.Errorf("identity of the caller's netns: %w", err)
	} else if host == want {
		return Pin{}, fmt.Errorf("%s: %w", netnsPath, ErrHostNetns)
	}

	if err := ensureDir(pinDir); err != nil {
		return Pin{}, err
	}
	pin := Pin{Path: path, Netns: want}

	for i := 0; ; i++ {
		got, err := pinned(path)
		switch {
		case errors.Is(err, ErrGone):
		case err != nil:
			return Pin{}, err
		case got == want:
			return pin, nil
		case i >= maxStacked:
			return Pin{}, fmt.Errorf("netns pin %s: still holds netns %s after %d unmounts", path, got, i)
		default:
			// A stale pin of this attachment's earlier netns: supersede it.
			if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
				return Pin{}, fmt.Errorf("unmount stale netns pin %s (netns %s): %w", path, got, err)
			}
			continue
		}
		break
	}

	if err := createMountPoint(path); err != nil {
		return Pin{}, err
	}
	// Bind from the open fd: /proc/thread-self/fd/N resolves to the nsfs
	// object we identified, whatever netnsPath points at by now.
	fdPath := fmt.Sprintf("/proc/thread-self/fd/%d", src.Fd())
	if err := unix.Mount(fdPath, path, "", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(path)
		return Pin{}, fmt.Errorf("bind-mount netns %s onto %s: %w", netnsPath, path, err)
	}
	got, err := nsident.OfPath(path)
	if err == nil && got != want {
		err = fmt.Errorf("pinned netns is %s, want %s", got, want)
	}
	if err != nil {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
		return Pin{}, fmt.Errorf("verify netns pin %s: %w", path, err)
	}
	return pin, nil
}

// pinned returns the identity of the netns mounted at path, ErrGone when the
// path is missing or an unmounted regular file, and an error for anything
// else (a symlink, a directory, a non-nsfs mount).
func pinned(path string) (nsident.Identity, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nsident.Identity{}, fmt.Errorf("%s: %w", path, ErrGone)
	}
	if err != nil {
		return nsident.Identity{}, fmt.Errorf("inspect netns pin: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nsident.Identity{}, fmt.Errorf("netns pin %s is a %s, not a file; leaving it alone", path, fi.Mode().Type())
	}
	id, err := nsident.OfPath(path)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, nsident.ErrNotNetns) {
		return nsident.Identity{}, fmt.Errorf("inspect netns pin: %w", err)
	}
	mnt, err := isMountPoint(path)
	if err != nil {
		return nsident.Identity{}, err
	}
	if mnt {
		return nsident.Identity{}, fmt.Errorf("netns pin %s is a mount of something other than a netns; leaving it alone", path)
	}
	return nsident.Identity{}, fmt.Errorf("%s is an unmounted file: %w", path, ErrGone)
}

// createMountPoint makes path an empty regular file to mount onto, reusing a
// leftover one (pinned reported it as an unmounted regular file).
func createMountPoint(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create netns pin file: %w", err)
	}
	return f.Close()
}

// ensureDir creates pinDir (0700) and makes it a mount point in a shared
// peer group of its own, as `ip netns add` does for /run/netns:
//
//   - shared, so that mount namespaces cloned while a pin exists (systemd
//     services with private mounts, containers with a copy of /run) hold
//     peer or slave copies of the pin that our unmount also removes. With a
//     private pin dir their copies would never be unmounted and would keep the
//     netns alive for as long as they live: the very leak we fight.
//   - its own peer group (made private before shared), so that pins do not
//     propagate into the parent mount underneath the pin dir, where they
//     would outlive an unmount of the pin dir itself.
//
// An existing mount point is only made shared, never re-bound, so repeated
// calls do not stack mounts; a flock on the directory serialises concurrent
// first-time setups.
func ensureDir(pinDir string) error {
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return fmt.Errorf("create pin dir: %w", err)
	}
	// The one rule Remove, RemoveOrphan and GC apply too: a pin dir they
	// would refuse later must be refused now, or its pins outlive DEL.
	if err := checkDirShape(pinDir); err != nil {
		return err
	}
	d, err := os.Open(pinDir)
	if err != nil {
		return fmt.Errorf("open pin dir: %w", err)
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock pin dir: %w", err)
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN) //nolint:errcheck // closing releases it anyway

	mnt, err := isMountPoint(pinDir)
	if err != nil {
		return err
	}
	if !mnt {
		if err := unix.Mount(pinDir, pinDir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind pin dir %s onto itself: %w", pinDir, err)
		}
		if err := unix.Mount("", pinDir, "", unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make pin dir %s private: %w", pinDir, err)
		}
	}
	if err := unix.Mount("", pinDir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make pin dir %s shared: %w", pinDir, err)
	}
	return nil
}

// isMountPoint reports whether path is the root of a mount, by comparing its
// mount ID with its parent's. A path that is its own parent ("/") is one.
func isMountPoint(path string) (bool, error) {
	id, err := mountID(path)
	if err != nil {
		return false, err
	}
	parent := filepath.Dir(path)
	if parent == path {
		return true, nil
	}
	pid, err := mountID(parent)
	if err != nil {
		return false, err
	}
	return id != pid, nil
}

func mountID(path string) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, fmt.Errorf("statx %s: kernel reports no mount ID", path)
	}
	return stx.Mnt_id, nil
}
