package inroot

import (
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// maxSymlinks bounds the symlinks one Resolve follows (as filepath-securejoin,
// which runc uses for mount destinations, does).
const maxSymlinks = 255

// Resolved is where a path leads inside the root.
type Resolved struct {
	// Path is the absolute, clean path inside the root that the name leads
	// to, with no symlink left in it (as far as the image is concerned).
	Path string
	// Opaque is set when the walk reached a path whose content is not the
	// image's (see Resolve); At is that path. Path is then At with the rest
	// of the name appended lexically: where it really leads is unknown.
	Opaque bool
	At     string
}

// Resolve finds where name (a path inside the container) leads in the
// image, the way a runtime resolves a mount destination in the rootfs
// (filepath-securejoin semantics, as runc uses): components are looked up one
// by one; every symlink is followed inside the root (absolute targets from
// the root, ".." never above it); a component that does not exist is taken
// as is, and so is the rest after it.
//
// Before each component is looked up, opaque (may be nil) is asked whether
// the content at that path is the image's at all, for example because a
// mount will cover it in the container. If not, the walk stops there: see
// Resolved.Opaque. No symlink found at or below such a path is followed,
// since the container will not see it.
//
// Nothing is opened but O_PATH lookups of one component at a time with
// RESOLVE_NO_SYMLINKS, and symlinks are read with readlinkat on that fd; no
// file content is read and nothing is written.
func (r *Root) Resolve(name string, opaque func(p string) bool) (Resolved, error) {
	cur, rest, links := "/", name, 0
	for rest != "" {
		var comp string
		comp, rest, _ = strings.Cut(rest, "/")
		switch comp {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur) // path.Dir("/") is "/": never above the root
			continue
		}
		next := path.Join(cur, comp)
		if opaque != nil && opaque(next) {
			return Resolved{Path: path.Join(next, rest), Opaque: true, At: next}, nil
		}
		target, isLink, err := r.readlink(next)
		if err != nil {
			return Resolved{}, err
		}
		if !isLink {
			cur = next // a directory, another file, or missing: taken as is
			continue
		}
		if links++; links > maxSymlinks {
			return Resolved{}, &os.PathError{Op: "resolve", Path: name, Err: unix.ELOOP}
		}
		if strings.HasPrefix(target, "/") {
			cur = "/"
		}
		rest = target + "/" + rest
	}
	return Resolved{Path: cur}, nil
}

// readlink looks at p (absolute, inside the root, with no symlink before its
// last component) without following anything. It returns the target and true
// when p is a symlink; "" and false when it is anything else or does not exist.
func (r *Root) readlink(p string) (string, bool, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	var fd int
	var err error
	for i := 0; i < 16; i++ {
		fd, err = unix.Openat2(int(r.dir.Fd()), p[1:], &how)
		if err != unix.EAGAIN && err != unix.EINTR {
			break
		}
	}
	switch err {
	case nil:
	case unix.ENOENT, unix.ENOTDIR:
		return "", false, nil // missing, or below a non-directory: lexical from here
	default:
		return "", false, &os.PathError{Op: "openat2", Path: p, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", false, fmt.Errorf("failed to stat %q in rootfs: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return "", false, nil
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", false, fmt.Errorf("failed to read symlink %q in rootfs: %w", p, err)
	}
	return string(buf[:n]), true, nil
}
