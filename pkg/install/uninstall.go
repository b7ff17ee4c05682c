package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// UninstallReport says what Uninstall changed.
type UninstallReport struct {
	// Edited are the config files leakguard's entry was removed from;
	// Removed the config files removed (leakguard's own file).
	Edited, Removed []string
	// Binaries are the binaries removed; Kept those UninstallStaged left
	// in place because they may still be run.
	Binaries, Kept []string
}

// Uninstall takes leakguard out of the node: first its entry from every
// config file of the conf dir (each rewritten atomically; leakguard's own
// file removed), then, once no config file runs leakguard any more, its
// binaries. If any file may still run leakguard (one it cannot parse that
// mentions it, a wrapper-mode chain, a symlink), the binaries stay and the
// error says which file: an entry whose binary is gone fails every pod's DEL.
// ownFile is leakguard's own file's name ("" for DefaultOwnFile); it is
// removed only if it runs leakguard.
func (in *Installer) Uninstall(ownFile string) (UninstallReport, error) {
	return in.uninstall(context.Background(), ownFile, nil)
}

// UninstallStaged is Uninstall for a node whose runtime keeps creating
// containers: the entry (and own file) first, then leakguard's binary, then
// the hook and NRI plugin binaries only once released returns nil — while
// leakguard-nri still adds the hook to new containers, a hook binary that is
// gone fails their creation. If released fails (ctx's deadline, say), those
// binaries stay, are listed in Kept, and the error says why.
func (in *Installer) UninstallStaged(ctx context.Context, ownFile string, released func(context.Context) error) (UninstallReport, error) {
	if released == nil {
		return UninstallReport{}, errors.New("UninstallStaged: no release check")
	}
	return in.uninstall(ctx, ownFile, released)
}

func (in *Installer) uninstall(ctx context.Context, ownFile string, released func(context.Context) error) (UninstallReport, error) {
	in.pass.Lock()
	defer in.pass.Unlock()
	var rep UninstallReport
	if ownFile == "" {
		ownFile = in.opts.OwnFile
	}
	if ownFile == "" {
		ownFile = DefaultOwnFile
	}
	dir := in.opts.ConfDir
	err := checkDir(dir)
	switch {
	case errors.Is(err, errNoDir):
		// No config can name leakguard.
	case err != nil:
		return rep, err
	default:
		if err := in.removeEntries(ownFile, &rep); err != nil {
			return rep, fmt.Errorf("%w; binaries kept", err)
		}
		if err := stillRuns(dir); err != nil {
			return rep, fmt.Errorf("%w; binaries kept", err)
		}
		if err := in.drain(ctx, rep); err != nil {
			return rep, err
		}
	}
	in.update(func(s *Status) { s.Installed = false })
	var waited error
	asked := false
	for i, b := range in.binaries() {
		if _, err := os.Lstat(b.dst()); errors.Is(err, os.ErrNotExist) {
			continue
		}
		// binaries() lists leakguard first; the others are run for
		// containers, by the runtime, as long as leakguard-nri names them.
		if i > 0 && released != nil && !asked {
			asked = true
			if err := released(ctx); err != nil {
				waited = fmt.Errorf("hook and NRI plugin binaries kept: %w", err)
			}
		}
		if waited != nil {
			rep.Kept = append(rep.Kept, b.dst())
			in.log.Warn("binary kept", "path", b.dst(), "reason", waited.Error())
			continue
		}
		if err := removeBinary(b.dst()); err != nil {
			return rep, fmt.Errorf("remove %s: %w", b.dst(), err)
		}
		rep.Binaries = append(rep.Binaries, b.dst())
		in.log.Info("removed binary", "path", b.dst())
	}
	return rep, waited
}

// removeEntries removes leakguard's own file first (runtimes fall back to
// the primary, complete), then the entry from every other config file.
func (in *Installer) removeEntries(ownFile string, rep *UninstallReport) error {
	dir := in.opts.ConfDir
	names, err := listConfs(dir)
	if err != nil {
		return err
	}
	if contains(names, ownFile) {
		if f := readConf(dir, ownFile); f.Err == nil && f.holds() {
			if err := os.Remove(filepath.Join(dir, ownFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", ownFile, err)
			}
			if err := syncDir(dir); err != nil {
				return err
			}
			rep.Removed = append(rep.Removed, ownFile)
			in.log.Info("removed leakguard's own file", "file", ownFile)
		}
	}
	var errs []error
	for _, n := range names {
		if n == ownFile && contains(rep.Removed, n) {
			continue
		}
		f := readConf(dir, n)
		if f.Err != nil {
			continue // stillRuns judges what it cannot parse
		}
		list, removed, err := withoutEntry(f.List)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
			continue
		}
		if removed == 0 {
			continue
		}
		if f.Symlink {
			errs = append(errs, fmt.Errorf("%s runs leakguard but is a symlink: not written through; remove the entry by hand", n))
			continue
		}
		if ps, _ := plugins(list); len(ps) == 0 {
			// Nothing but leakguard: not a network anyone else wrote.
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				errs = append(errs, err)
				continue
			}
			rep.Removed = append(rep.Removed, n)
			continue
		}
		out, err := list.render()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = writeAtomic(dir, n, f.Mode, &owner{UID: f.UID, GID: f.GID}, func(w io.Writer) error { _, err := w.Write(out); return err })
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Edited = append(rep.Edited, n)
		in.log.Info("removed leakguard's entry", "file", n, "entries", removed)
	}
	return errors.Join(errs...)
}

// stillRuns returns an error naming the first config file that runs, or may
// run, leakguard.
func stillRuns(dir string) error {
	names, err := listConfs(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		f := readConf(dir, n)
		if errors.Is(f.Err, errTooBig) {
			// Runtimes read it whole: it may run leakguard.
			if mentionsLeakguard(filepath.Join(dir, n)) {
				return fmt.Errorf("%s mentions leakguard and is too large to edit (%v)", n, f.Err)
			}
			continue
		}
		if f.Err != nil {
			if bytes.Contains(bytes.ToLower(f.Data), []byte(PluginType)) {
				return fmt.Errorf("%s mentions leakguard but cannot be parsed (%v)", n, f.Err)
			}
			continue
		}
		ps, err := plugins(f.List)
		if err == nil && mentions(ps) {
			return fmt.Errorf("%s still runs leakguard (wrapper mode is removed by hand)", n)
		}
	}
	return nil
}

// maxScanSize bounds how much of an oversized config mentionsLeakguard
// reads; past it the file is taken to mention leakguard (binaries kept).
const maxScanSize = 256 << 20

// mentionsLeakguard tells whether a config too large to parse may name
// leakguard: it is read in chunks (never whole), case-folded as stillRuns
// does; a file it cannot read to the end counts as mentioning it.
func mentionsLeakguard(path string) bool {
	f, err := openRegular(path)
	if err != nil {
		return false // not a regular file: runtimes cannot load it either
	}
	defer f.Close()
	needle := []byte(PluginType)
	buf := make([]byte, 64<<10)
	keep := 0 // bytes carried over, so a match across chunks is found
	var total int64
	for {
		n, err := f.Read(buf[keep:])
		total += int64(n)
		if bytes.Contains(bytes.ToLower(buf[:keep+n]), needle) {
			return true
		}
		if errors.Is(err, io.EOF) {
			return false
		}
		if err != nil || total > maxScanSize {
			return true
		}
		end := keep + n
		keep = min(len(needle)-1, end)
		copy(buf, buf[end-keep:end])
	}
}

// drain waits Options.Drain after an entry was removed: a runtime that
// loaded the chain just before may still exec leakguard for a DEL in
// flight. Cut short (the process is being stopped), the binaries stay.
func (in *Installer) drain(ctx context.Context, rep UninstallReport) error {
	if in.opts.Drain <= 0 || len(rep.Edited)+len(rep.Removed) == 0 {
		return nil
	}
	t := time.NewTimer(in.opts.Drain)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("entry removed, binaries kept: stopped while a DEL that loaded the old chain could still run leakguard: %w", ctx.Err())
	}
}
