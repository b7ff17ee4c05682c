package install_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/leakguard/leakguard/pkg/install"
)

// timeline records, through one inotify instance (so in the order the
// kernel saw them), the events on the conf dir and the bin dir.
type timeline struct {
	mu     sync.Mutex
	events []fsnotify.Event
	w      *fsnotify.Watcher
	done   chan struct{}
}

func record(t *testing.T, dirs ...string) *timeline {
	t.Helper()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if err := w.Add(d); err != nil {
			t.Fatal(err)
		}
	}
	tl := &timeline{w: w, done: make(chan struct{})}
	go func() {
		defer close(tl.done)
		for ev := range w.Events {
			tl.mu.Lock()
			tl.events = append(tl.events, ev)
			tl.mu.Unlock()
		}
	}()
	return tl
}

// stop ends the recording, after a moment for the last events.
func (tl *timeline) stop() []fsnotify.Event {
	time.Sleep(50 * time.Millisecond)
	tl.w.Close()
	<-tl.done
	return tl.events
}

// first is the index of the first event on path with op, or -1.
func first(evs []fsnotify.Event, path string, op fsnotify.Op) int {
	for i, e := range evs {
		if e.Name == path && e.Op.Has(op) {
			return i
		}
	}
	return -1
}

// Uninstall rewrites the primary without the entry (atomically: a rename
// onto it) before it removes the binary; the config it leaves loads and no
// longer runs leakguard, and nothing else is removed.
func TestUninstallRemovesTheEntryBeforeTheBinary(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	opts := n.opts()
	opts.HookDir = filepath.Join(n.root, "hooks")
	in := n.installer(opts)
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	tl := record(t, n.conf, n.bin, opts.HookDir)
	rep, err := n.installer(opts).Uninstall("")
	if err != nil {
		t.Fatal(err)
	}
	evs := tl.stop()
	entryGone := first(evs, filepath.Join(n.conf, "10-a.conflist"), fsnotify.Create) // the rename onto it
	binGone := first(evs, filepath.Join(n.bin, "leakguard"), fsnotify.Remove)
	if entryGone < 0 || binGone < 0 || entryGone > binGone {
		t.Fatalf("entry removed at event %d, binary at %d; want the entry first:\n%v", entryGone, binGone, evs)
	}
	if !reflect.DeepEqual(rep.Edited, []string{"10-a.conflist"}) || len(rep.Binaries) != 2 {
		t.Fatalf("report %+v", rep)
	}
	if file, chain := n.runtimeChain(); file != "10-a.conflist" || chain != "bridge,portmap" {
		t.Fatalf("runtime loads %s: %s", file, chain)
	}
	for _, p := range []string{filepath.Join(n.bin, "leakguard"), filepath.Join(opts.HookDir, "leakguard-hook")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	// Uninstall again: nothing to do, no error.
	if rep, err := n.installer(opts).Uninstall(""); err != nil || len(rep.Edited)+len(rep.Removed)+len(rep.Binaries) != 0 {
		t.Fatalf("second uninstall: %+v, %v", rep, err)
	}
}

// With an own file, uninstall removes that file (runtimes fall back to the
// untouched primary) before the binary.
func TestUninstallOwnFile(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	opts := n.opts()
	opts.OwnFile = install.DefaultOwnFile
	if err := n.installer(opts).Reconcile(); err != nil {
		t.Fatal(err)
	}
	tl := record(t, n.conf, n.bin)
	// An uninstall run without --own-file still finds the default own file.
	rep, err := n.installer(n.opts()).Uninstall("")
	if err != nil {
		t.Fatal(err)
	}
	evs := tl.stop()
	ownGone := first(evs, filepath.Join(n.conf, install.DefaultOwnFile), fsnotify.Remove)
	binGone := first(evs, filepath.Join(n.bin, "leakguard"), fsnotify.Remove)
	if ownGone < 0 || binGone < 0 || ownGone > binGone {
		t.Fatalf("own file removed at event %d, binary at %d:\n%v", ownGone, binGone, evs)
	}
	if !reflect.DeepEqual(rep.Removed, []string{install.DefaultOwnFile}) || len(rep.Edited) != 0 {
		t.Fatalf("report %+v", rep)
	}
	if n.read("10-a.conflist") != bridgeList {
		t.Fatal("primary edited")
	}
}

// When a config file may still run leakguard (one it cannot parse that
// mentions it, or leakguard wrapping the main plugin), uninstall keeps the
// binary and names the file.
func TestUninstallKeepsTheBinaryWhileAConfigMayRunIt(t *testing.T) {
	for name, content := range map[string]string{
		"30-broken.conflist": `{"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "leakguard"`,
		"30-wrapped.conflist": `{"cniVersion": "1.0.0", "name": "w", "plugins": [
			{"type": "leakguard", "delegate": {"type": "bridge"}}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			n := newNode(t)
			n.write("10-a.conflist", bridgeList)
			if err := n.installer(n.opts()).Reconcile(); err != nil {
				t.Fatal(err)
			}
			n.write(name, content)
			_, err := n.installer(n.opts()).Uninstall("")
			if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "binaries kept") {
				t.Fatalf("Uninstall = %v", err)
			}
			if _, err := os.Stat(filepath.Join(n.bin, "leakguard")); err != nil {
				t.Fatalf("binary removed: %v", err)
			}
			if got := n.chain("10-a.conflist"); !reflect.DeepEqual(got, []string{"bridge", "portmap"}) {
				t.Fatalf("entry still in the primary: %v", got)
			}
		})
	}
}

// A leakguard entry in any config file (not only the primary) is removed.
func TestUninstallCleansEveryFile(t *testing.T) {
	n := newNode(t)
	withLG := `{"cniVersion": "1.0.0", "name": "%s", "plugins": [{"type": "ptp"}, {"type": "leakguard"}]}`
	n.write("10-a.conflist", strings.Replace(withLG, "%s", "a", 1))
	n.write("20-b.conflist", strings.Replace(withLG, "%s", "b", 1))
	n.write("30-lg.conf", `{"cniVersion": "1.0.0", "name": "lg", "type": "leakguard"}`)
	rep, err := n.installer(n.opts()).Uninstall("")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rep.Edited, []string{"10-a.conflist", "20-b.conflist"}) || !reflect.DeepEqual(rep.Removed, []string{"30-lg.conf"}) {
		t.Fatalf("report %+v", rep)
	}
	for _, f := range []string{"10-a.conflist", "20-b.conflist"} {
		if got := n.chain(f); !reflect.DeepEqual(got, []string{"ptp"}) {
			t.Errorf("%s: %v", f, got)
		}
	}
}

// With a drain, the binary outlives the entry by at least that long (a DEL
// that loaded the old chain may still exec it); a stop during the drain
// keeps the binaries.
func TestUninstallDrainsBeforeRemovingTheBinary(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	opts := n.opts()
	opts.Drain = 300 * time.Millisecond
	if err := n.installer(opts).Reconcile(); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(n.bin, "leakguard")
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := n.installer(opts).Uninstall("")
		done <- err
	}()
	entryGone := waitFor(t, "entry removed", 5*time.Second, func() bool {
		return !strings.Contains(n.read("10-a.conflist"), "leakguard")
	})
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("binary gone with the entry: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < opts.Drain {
		t.Fatalf("uninstall took %v, less than the %v drain", took, opts.Drain)
	}
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Fatalf("binary still there after the drain: %v", err)
	}
	t.Logf("entry gone after %v", entryGone)

	// Stopped during the drain: the entry is gone, the binaries stay.
	n.write("10-a.conflist", bridgeList)
	opts.Drain = time.Minute
	in := n.installer(opts)
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	rep, err := in.UninstallStaged(ctx, "", func(context.Context) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "binaries kept") {
		t.Fatalf("stopped drain: %+v, %v; want binaries kept", rep, err)
	}
	if strings.Contains(n.read("10-a.conflist"), "leakguard") || len(rep.Binaries) != 0 {
		t.Fatalf("report %+v", rep)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("binary removed though the drain was cut short: %v", err)
	}
}
