package nspin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

// Open opens the netns pinned at pin.Path if, and only if, it is the recorded
// one (nsfs device and inode of the opened fd, so there is no window between
// the check and the use). It returns an error wrapping ErrGone when nothing
// is pinned there and a *ReplacedError when another netns is.
func Open(pin Pin) (ns.NetNS, error) {
	if err := checkPin(pin); err != nil {
		return nil, err
	}
	n, err := ns.GetNS(pin.Path)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		if errors.As(err, &notExist) || errors.As(err, &notNS) {
			return nil, fmt.Errorf("open netns pin %s: %w: %v", pin.Path, ErrGone, err)
		}
		return nil, fmt.Errorf("open netns pin %s: %w", pin.Path, err)
	}
	got, err := nsident.OfFd(n.Fd())
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("identify netns pin %s: %w", pin.Path, err)
	}
	if got != pin.Netns {
		n.Close()
		return nil, &ReplacedError{Path: pin.Path, Recorded: pin.Netns, Found: got}
	}
	return n, nil
}

// Remove unmounts (lazily: open fds keep working) and deletes a pin. A pin
// that is already gone is not an error. It only ever unmounts an nsfs mount
// of the recorded netns, at a valid pin name inside a directory set up by Pin
// (a 0700 mount point); a different netns at the path yields *ReplacedError
// and is left mounted, anything else an error. DEL should log those and go
// on: the pin is no longer this attachment's.
func Remove(pin Pin) error {
	if err := checkPin(pin); err != nil {
		return err
	}
	dir := filepath.Dir(pin.Path)
	if err := checkPinDir(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove netns pin %s: %w", pin.Path, err)
	}
	for i := 0; ; i++ {
		got, err := pinned(pin.Path)
		if errors.Is(err, ErrGone) {
			break
		}
		if err != nil {
			return fmt.Errorf("remove netns pin: %w", err)
		}
		if got != pin.Netns {
			return &ReplacedError{Path: pin.Path, Recorded: pin.Netns, Found: got}
		}
		if i >= maxStacked {
			return fmt.Errorf("remove netns pin %s: still mounted after %d unmounts", pin.Path, i)
		}
		if err := unix.Unmount(pin.Path, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount netns pin %s: %w", pin.Path, err)
		}
	}
	if err := os.Remove(pin.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns pin file: %w", err)
	}
	return nil
}

// checkPin validates the shape of a recorded pin before any file operation.
func checkPin(pin Pin) error {
	if !filepath.IsAbs(pin.Path) || filepath.Clean(pin.Path) != pin.Path {
		return fmt.Errorf("netns pin path %q is not a clean absolute path", pin.Path)
	}
	if err := ValidName(filepath.Base(pin.Path)); err != nil {
		return fmt.Errorf("netns pin path %q: %w", pin.Path, err)
	}
	if pin.Netns.IsZero() {
		return fmt.Errorf("netns pin %s has no recorded netns identity", pin.Path)
	}
	return nil
}

// checkPinDir accepts only what ensureDir leaves: a directory that passes
// checkDirShape and is a mount point. It keeps Remove away from netns mounts
// it did not make, such as a runtime's /run/netns.
func checkPinDir(dir string) error {
	if err := checkDirShape(dir); err != nil {
		return err
	}
	mnt, err := isMountPoint(dir)
	if err != nil {
		return err
	}
	if !mnt {
		return fmt.Errorf("%s is not a mount point, not a pin dir", dir)
	}
	return nil
}

// checkDirShape is the ownership rule of a pin dir, for making pins and for
// removing them alike: a real directory (not a symlink), mode 0700, owned by
// the caller's uid. The mode is never changed: a mistyped pinDir such as
// /run must be refused, not locked down.
func checkDirShape(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("inspect pin dir: %w", &os.PathError{Op: "lstat", Path: dir, Err: err})
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("pin dir %s is not a directory", dir)
	case st.Mode&0o7777 != 0o700:
		return fmt.Errorf("pin dir %s has mode %#o: it must be a dedicated 0700 directory", dir, st.Mode&0o7777)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("pin dir %s is owned by uid %d, not by us (uid %d): its pins could not be removed", dir, st.Uid, os.Geteuid())
	}
	return nil
}

// RemoveOrphan removes the pin of an attachment whose record is gone (lost,
// corrupt, or never saved because ADD died after pinning): whatever netns is
// mounted at pinDir/name. The name is the attachment's own and pinDir must be
// a pin dir made by Pin, so nothing but this attachment's pin can be there.
// It reports whether a pin was removed; a missing one is not an error.
func RemoveOrphan(pinDir, name string) (bool, error) {
	if err := ValidName(name); err != nil {
		return false, err
	}
	path := filepath.Join(pinDir, name)
	// One lstat when there is nothing (ADD runs this on every call).
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	// Something is there: touch it only inside a pin dir Pin made.
	if err := checkPinDir(pinDir); err != nil {
		return false, fmt.Errorf("netns pin %s: %w", path, err)
	}
	id, err := pinned(path)
	if errors.Is(err, ErrGone) {
		_ = os.Remove(path) // an unmounted leftover file
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := Remove(Pin{Path: path, Netns: id}); err != nil {
		return false, err
	}
	return true, nil
}
