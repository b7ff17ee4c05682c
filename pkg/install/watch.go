package install

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

const (
	// settle is how long the dir must stay quiet after a change before the
	// pass runs (an agent's write is a burst of events), and maxSettle
	// bounds that wait under a stream of changes.
	settle    = 15 * time.Millisecond
	maxSettle = 150 * time.Millisecond
	// pollMissing is the re-check period while a dir to watch does not
	// exist yet (inotify cannot watch what is not there).
	pollMissing = time.Second
	// maxBackoff bounds the retry delay after a failed pass.
	maxBackoff = 30 * time.Second
)

// Install runs passes until one succeeds: it waits for the conf dir, the bin
// dir and a primary to exist, and retries failures with back-off. It
// returns nil once leakguard is in the chain, or ctx's error.
func (in *Installer) Install(ctx context.Context) error { return in.run(ctx, false) }

// Watch installs and keeps leakguard installed until ctx is done: every
// change in the conf dir (or to an installed binary) triggers a pass, and a
// pass also runs every Resync in case a change was missed. It never removes
// anything when it stops: a restart or upgrade must not leave a window
// where pods are set up without leakguard or torn down without its binary.
func (in *Installer) Watch(ctx context.Context) error { return in.run(ctx, true) }

func (in *Installer) run(ctx context.Context, watch bool) error {
	backoff := time.Second
	for {
		for _, d := range in.dirs() {
			if n := removeStaleTemps(d, time.Now()); n > 0 {
				in.log.Info("removed temp files of a killed installer", "dir", d, "files", n)
			}
		}
		// A fresh watch every round, armed before the pass: what changes
		// during the pass wakes the next round, what changed before it the
		// pass sees. Nothing is lost when a watch is (inotify drops a
		// watch whose dir was replaced).
		w, missing := in.arm()
		err := in.Reconcile()
		if err == nil && !watch {
			closeWatcher(w)
			return nil
		}
		delay := in.opts.Resync
		var le *limitError
		switch {
		case err == nil:
			backoff = time.Second
		case errors.As(err, &le):
			delay = min(delay, le.After)
		case Waiting(err):
			delay = min(delay, pollMissing)
		default:
			delay = min(delay, backoff)
			backoff = min(2*backoff, maxBackoff)
		}
		if missing {
			delay = min(delay, pollMissing)
		}
		woke := in.wait(ctx, w, delay)
		closeWatcher(w)
		if !woke {
			return ctx.Err()
		}
	}
}

// dirs are the directories the installer writes into.
func (in *Installer) dirs() []string {
	ds := []string{in.opts.ConfDir}
	for _, b := range in.binaries() {
		ds = append(ds, b.Dir)
	}
	return ds
}

// arm watches every dir the installer writes into that exists; missing
// says some did not.
func (in *Installer) arm() (*fsnotify.Watcher, bool) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		in.log.Warn("cannot watch; re-checking periodically instead", "err", err)
		return nil, true
	}
	missing := false
	seen := map[string]bool{}
	for _, d := range in.dirs() {
		if seen[d] {
			continue
		}
		seen[d] = true
		if err := w.Add(d); err != nil {
			missing = true
		}
	}
	return w, missing
}

func closeWatcher(w *fsnotify.Watcher) {
	if w != nil {
		w.Close()
	}
}

// wait blocks until a relevant change has settled, delay has passed, or ctx
// is done (false).
func (in *Installer) wait(ctx context.Context, w *fsnotify.Watcher, delay time.Duration) bool {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case err, ok := <-errs:
			if !ok {
				return true
			}
			in.log.Warn("watch error; re-arming", "err", err)
			return true
		case ev, ok := <-events:
			if !ok {
				return true
			}
			if in.relevant(ev) {
				in.settle(ctx, events)
				return true
			}
		}
	}
}

// settle drains events until the dir has been quiet for settle (at most
// maxSettle).
func (in *Installer) settle(ctx context.Context, events <-chan fsnotify.Event) {
	deadline := time.NewTimer(maxSettle)
	defer deadline.Stop()
	quiet := time.NewTimer(settle)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-quiet.C:
			return
		case _, ok := <-events:
			if !ok {
				return
			}
			quiet.Reset(settle)
		}
	}
}

// relevant: a change to a config file, leakguard's own file, one of our
// binaries, or a watched dir itself; not our temp files nor other plugins'
// binaries.
func (in *Installer) relevant(ev fsnotify.Event) bool {
	name := filepath.Base(ev.Name)
	dir := filepath.Dir(ev.Name)
	if strings.HasPrefix(name, tempPrefix) {
		return false
	}
	for _, d := range in.dirs() {
		if ev.Name == d {
			return true // the dir itself was removed or moved
		}
	}
	if dir == in.opts.ConfDir && hasConfExt(name) {
		return true
	}
	for _, b := range in.binaries() {
		if dir == b.Dir && name == b.Name {
			return true
		}
	}
	return false
}
