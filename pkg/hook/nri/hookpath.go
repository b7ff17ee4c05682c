package nri

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// maxHookLinks bounds the symlinks followed to reach the hook, as the
// kernel's own limit does (ELOOP).
const maxHookLinks = 40

// checkHookDirs says why another user could replace the hook at path
// between the check and the runtime's execve: the runtime runs whatever the
// name resolves to then, as root. Every directory walked to reach it, along
// the path as given and along each symlink's target, must belong to root
// (or us) and be writable by no one else; a sticky directory (/tmp) is
// accepted when the entry walked through it belongs to root (or us), since
// only its owner can then rename or remove it.
func checkHookDirs(path string) error {
	rest := splitPath(path)
	cur := "/"
	var dir unix.Stat_t
	if err := unix.Lstat(cur, &dir); err != nil {
		return fmt.Errorf("hook %q: %w", path, err)
	}
	for links := 0; len(rest) > 0; {
		name := rest[0]
		rest = rest[1:]
		if name == ".." {
			cur = filepath.Dir(cur) // cur holds no symlink: its parent is its parent
			if err := unix.Lstat(cur, &dir); err != nil {
				return fmt.Errorf("hook %q: %w", path, err)
			}
			continue
		}
		next := filepath.Join(cur, name)
		var st unix.Stat_t
		if err := unix.Lstat(next, &st); err != nil {
			return fmt.Errorf("hook %q: %s: %w", path, next, err)
		}
		if err := safeDir(cur, &dir, st.Uid); err != nil {
			return fmt.Errorf("hook %q: %w: another user could replace the hook the runtime runs as root", path, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			if links++; links > maxHookLinks {
				return fmt.Errorf("hook %q: too many symlinks", path)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return fmt.Errorf("hook %q: %w", path, err)
			}
			if filepath.IsAbs(target) {
				cur = "/"
				if err := unix.Lstat(cur, &dir); err != nil {
					return fmt.Errorf("hook %q: %w", path, err)
				}
			}
			rest = append(splitPath(target), rest...)
		case unix.S_IFDIR:
			cur, dir = next, st
		default:
			if len(rest) > 0 {
				return fmt.Errorf("hook %q: %s is not a directory", path, next)
			}
		}
	}
	return nil
}

// safeDir checks the directory d (stat st) through which an entry owned by
// entryUID is reached.
func safeDir(d string, st *unix.Stat_t, entryUID uint32) error {
	if !ownedByUs(st.Uid) {
		return fmt.Errorf("directory %s is owned by uid %d, not root", d, st.Uid)
	}
	if st.Mode&0o022 == 0 {
		return nil
	}
	if st.Mode&unix.S_ISVTX != 0 && ownedByUs(entryUID) {
		return nil
	}
	return fmt.Errorf("directory %s is writable by group or others (mode %04o)", d, st.Mode&0o7777)
}

func ownedByUs(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}
