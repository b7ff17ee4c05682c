package hook

import (
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/leakguard/leakguard/pkg/bundle"
	"github.com/leakguard/leakguard/pkg/gssconf"
	"github.com/leakguard/leakguard/pkg/inroot"
	"golang.org/x/sys/unix"
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
	mounts := c.BindMountsOver(dir)
	if covers(mounts, dir) {
		r.Risks = append(r.Risks, fmt.Sprintf("%s is bind-mounted (%v): not edited", dir, mounts))
		return nil
	}
	root, err := inroot.Open(c.Rootfs)
	if err != nil {
		return err
	}
	defer root.Close()
	names, err := root.ReadDirNames(gssconf.Dir)
	switch {
	case errors.Is(err, inroot.ErrCrossesMount):
		r.Risks = append(r.Risks, fmt.Sprintf("%s is on another mount: not edited", dir))
		return nil
	case absent(err):
		names = nil // no drop-ins; gssproxy.conf is still tried below
	case err != nil:
		return err
	}
	for _, name := range gssconf.ReadOrder(names) {
		file := path.Join(dir, name)
		if covers(mounts, file) {
			r.Risks = append(r.Risks, fmt.Sprintf("%s is bind-mounted: not edited", file))
			continue
		}
		if err := editOne(root, file, r); err != nil {
			return err
		}
	}
	return nil
}

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
	old, err := f.ReadAll()
	if err != nil {
		return err
	}
	updated, n, err := gssconf.Disable(old)
	if errors.Is(err, gssconf.ErrLossy) {
		r.Risks = append(r.Risks, fmt.Sprintf("%s: %v: not edited", file, err))
		return nil
	}
	if err != nil || n == 0 {
		return err
	}
	if err := f.Rewrite(updated); err != nil {
		return err
	}
	r.Changed = append(r.Changed, file)
	r.Settings += n
	return nil
}

// absent is true for the lookups gssproxy itself would find nothing at.
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP)
}

// covers reports whether a mount at one of dests hides p (p itself or a parent).
func covers(dests []string, p string) bool {
	for _, d := range dests {
		d = path.Clean("/" + d)
		if d == "/" || d == p || len(p) > len(d) && p[:len(d)+1] == d+"/" {
			return true
		}
	}
	return false
}
