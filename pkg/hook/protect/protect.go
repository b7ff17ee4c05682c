package protect

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/hook/bundle"
	"github.com/leakguard/leakguard/pkg/hook/gssconf"
	"github.com/leakguard/leakguard/pkg/hook/inroot"
)

// protect edits every gssproxy config file in the container's rootfs and
// sets r.Decision from what happened.
func protect(c *bundle.Container, r *Result) {
	if err := editAll(c, r); err != nil {
		r.Decision, r.Err = Failed, err
		return
	}
	switch {
	case len(r.Risks) > 0:
		r.Decision = Risk
	case len(r.Changed) > 0:
		r.Decision = Edited
	default:
		r.Decision = Clean
	}
}

func editAll(c *bundle.Container, r *Result) error {
	dir := "/" + gssconf.Dir
	root, err := inroot.Open(c.Rootfs)
	if err != nil {
		return err
	}
	defer root.Close()
	binds, err := resolveBinds(root, c.MountPoints())
	if err != nil {
		r.Risks = append(r.Risks, fmt.Sprintf("%s not edited: %v", dir, err))
		return nil
	}
	dirAt, why, err := binds.check(root, dir, false)
	if err != nil {
		return err
	}
	if why != "" {
		r.Risks = append(r.Risks, why)
		return nil
	}
	names, more, err := root.ReadDirNames(gssconf.Dir, gssconf.MaxDirEntries)
	switch {
	case errors.Is(err, inroot.ErrCrossesMount):
		r.Risks = append(r.Risks, fmt.Sprintf("%s is on another mount: not edited", dir))
		return nil
	case absent(err):
		names = nil // no drop-ins; gssproxy.conf is still tried below
	case err != nil:
		return err
	}
	if more {
		r.Risks = append(r.Risks, fmt.Sprintf("%s has more than %d entries: only the first %d listed were checked",
			dir, gssconf.MaxDirEntries, gssconf.MaxDirEntries))
	}
	// A file bind-mounted into the directory may not exist in the image.
	names = binds.addNamesIn(dirAt, names)
	order := gssconf.ReadOrder(names)
	if limit := 1 + gssconf.MaxDropIns; len(order) > limit {
		r.Risks = append(r.Risks, fmt.Sprintf("%s has %d drop-ins, over the limit of %d: %d not checked, from %s on",
			dir, len(order)-1, gssconf.MaxDropIns, len(order)-limit, order[limit]))
		order = order[:limit]
	}
	for _, name := range order {
		file := path.Join(dir, name)
		_, why, err := binds.check(root, file, true)
		if err != nil {
			return err
		}
		if why != "" {
			r.Risks = append(r.Risks, why)
			continue
		}
		if err := editOne(root, file, r); err != nil {
			return err
		}
	}
	return nil
}

// bindMount is a bind mount from config.json and where the runtime will
// mount it inside the rootfs.
type bindMount struct {
	dest string // as config.json writes it (clean)
	at   string // resolved in the rootfs
}

type bindMounts []bindMount

// resolveBinds resolves every mount destination in the rootfs the way the
// runtime will, in config.json order. The hook runs in the host's mount
// namespace, where the container's mounts do not exist: the image is all it
// sees, so a destination reached through an in-image symlink (bind at
// /srv/gss, image link /etc/gssproxy -> /srv/gss) must be found by following
// that symlink, not by comparing paths. A destination below an earlier mount
// is resolved through that mount by the runtime, which the hook cannot see:
// no image symlink is followed past it (see inroot.Root.Resolve).
func resolveBinds(root *inroot.Root, mps []bundle.MountPoint) (bindMounts, error) {
	if !slices.ContainsFunc(mps, func(m bundle.MountPoint) bool { return m.Bind }) {
		return nil, nil // nothing from the host: the fast path resolves nothing
	}
	var (
		earlier []string
		binds   bindMounts
	)
	for _, m := range mps {
		res, err := root.Resolve(m.Destination, func(p string) bool { return slices.ContainsFunc(earlier, atOrAbove(p)) })
		at := res.Path
		if err != nil {
			if m.Bind {
				return nil, fmt.Errorf("cannot tell where bind mount %s lands in the rootfs: %w", m.Destination, err)
			}
			at = m.Destination
		}
		earlier = append(earlier, at)
		if m.Bind {
			binds = append(binds, bindMount{dest: m.Destination, at: at})
		}
	}
	return binds, nil
}

// check resolves p (a config path in the container) in the rootfs and says
// why it must not be edited, if a bind mount covers where it leads: a bind
// mount on it or on a directory on the way, including one reached through an
// in-image symlink; with inside, also a bind mount below it. It returns
// where p leads in the rootfs, then why it must not be edited ("" when it may).
func (bs bindMounts) check(root *inroot.Root, p string, inside bool) (string, string, error) {
	if len(bs) == 0 {
		return p, "", nil
	}
	res, err := root.Resolve(p, func(q string) bool { return bs.over(q) != nil })
	switch {
	case errors.Is(err, unix.ELOOP):
		return p, "", nil // gssproxy finds nothing there either
	case err != nil:
		return "", "", err
	}
	if res.Opaque {
		b := bs.over(res.At)
		if strings.HasPrefix(path.Clean(p)+"/", res.At+"/") {
			return res.Path, fmt.Sprintf("%s is bind-mounted (%s): not edited", p, b), nil
		}
		return res.Path, fmt.Sprintf("%s leads to %s through an in-image symlink, and %s is bind-mounted (%s): not edited",
			p, res.Path, res.At, b), nil
	}
	if inside {
		for _, b := range bs {
			if strings.HasPrefix(b.at, res.Path+"/") {
				return res.Path, fmt.Sprintf("%s has a bind mount inside (%s): not edited", p, b), nil
			}
		}
	}
	return res.Path, "", nil
}

func (b bindMount) String() string {
	if b.dest == b.at {
		return "mount " + b.dest
	}
	return "mount " + b.dest + ", which lands on " + b.at + " through an in-image symlink"
}

// over returns the bind mount whose resolved destination is q or a parent of q.
func (bs bindMounts) over(q string) *bindMount {
	for i := range bs {
		if atOrAbove(q)(bs[i].at) {
			return &bs[i]
		}
	}
	return nil
}

// addNamesIn adds to names those directly in dir (resolved) that a bind
// mount lands on or below.
func (bs bindMounts) addNamesIn(dir string, names []string) []string {
	for _, b := range bs {
		if rest, ok := strings.CutPrefix(b.at, dir+"/"); ok {
			name, _, _ := strings.Cut(rest, "/")
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return names
}

// atOrAbove returns a test for "d is p or a parent of p" (absolute, clean).
func atOrAbove(p string) func(d string) bool {
	return func(d string) bool {
		return d == "/" || d == p || strings.HasPrefix(p, d+"/")
	}
}

// editOne turns kernel_nfsd off in file, in place: each true value is
// overwritten by a false one of the same length (gssconf.Edits), so the
// file's length never changes and a hook killed mid-write leaves every
// setting either as it was or off, never a truncated file.
func editOne(root *inroot.Root, file string, r *Result) error {
	f, err := root.OpenRegular(file[1:])
	switch {
	case absent(err):
		return nil
	case errors.Is(err, inroot.ErrNotRegular):
		r.Ignored = append(r.Ignored, file)
		return nil
	case errors.Is(err, inroot.ErrCrossesMount):
		r.Risks = append(r.Risks, fmt.Sprintf("%s is on another mount: not edited", file))
		return nil
	case err != nil:
		return err
	}
	defer f.Close()
	old, err := f.Read(gssconf.MaxFileSize)
	if errors.Is(err, inroot.ErrTooLarge) {
		r.Risks = append(r.Risks, fmt.Sprintf("%s is %d bytes or more, over the %d-byte limit (gssproxy configs are a few KiB): not read or edited",
			file, max(f.Size(), gssconf.MaxFileSize+1), gssconf.MaxFileSize))
		return nil
	}
	if err != nil {
		return err
	}
	edits, err := gssconf.Edits(old)
	if errors.Is(err, gssconf.ErrLossy) {
		r.Risks = append(r.Risks, fmt.Sprintf("%s: %v: not edited", file, err))
		return nil
	}
	if err != nil || len(edits) == 0 {
		return err
	}
	// Reading a hard-linked file is harmless; writing could change a host
	// file of the same inode, which no in-root path check can see.
	if n := f.Links(); n > 1 {
		r.Risks = append(r.Risks, fmt.Sprintf("%s has kernel_nfsd on and %d hard links (another may be a host file): not edited", file, n))
		return nil
	}
	// One pwrite from the first value to the last: the bytes between are
	// written back unchanged.
	lo, hi := edits[0].Off, edits[len(edits)-1].Off+len(edits[len(edits)-1].New)
	err = f.Patch(int64(lo), old[lo:hi], gssconf.Apply(old, edits)[lo:hi])
	switch {
	case errors.Is(err, inroot.ErrHardLinked), errors.Is(err, inroot.ErrChanged):
		r.Risks = append(r.Risks, fmt.Sprintf("%s: %v: not edited", file, err))
		return nil
	case err != nil:
		return err
	}
	r.Changed = append(r.Changed, file)
	r.Settings += len(edits)
	return nil
}

// absent is true for the lookups gssproxy itself would find nothing at.
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP)
}
