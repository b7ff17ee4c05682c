package ondelete_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leakguard/leakguard/pkg/hook/nristate"
	"github.com/leakguard/leakguard/pkg/install"
	"github.com/leakguard/leakguard/pkg/install/ondelete"
	"github.com/leakguard/leakguard/test/apifake"
	"github.com/leakguard/leakguard/test/cnitest"
)

const primary = `{
  "cniVersion": "1.0.0",
  "name": "podnet",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

// node is a throw-away node with leakguard installed: conf dir, CNI bin
// dir, hook dir, NRI plugin dir and leakguard-nri's state file, under a
// temp dir.
type node struct {
	t                         *testing.T
	conf, bin, hook, nri, run string
	state                     string
	opts                      install.Options
}

func newNode(t *testing.T, ownFile bool) *node {
	t.Helper()
	root := t.TempDir()
	n := &node{t: t, conf: filepath.Join(root, "net.d"), bin: filepath.Join(root, "bin"),
		hook: filepath.Join(root, "hook"), nri: filepath.Join(root, "nri"), run: filepath.Join(root, "run")}
	n.state = filepath.Join(n.run, "state.json")
	from := filepath.Join(root, "from")
	for _, d := range []string{n.conf, n.bin, n.nri, n.run, from} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{install.PluginType, install.HookBinary, install.NRIBinary} {
		if err := os.WriteFile(filepath.Join(from, b), []byte("#!/bin/sh\n# "+b+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(n.conf, "10-podnet.conflist"), []byte(primary), 0o644); err != nil {
		t.Fatal(err)
	}
	n.opts = install.Options{ConfDir: n.conf, BinDir: n.bin, From: from, HookDir: n.hook, NRIDir: n.nri, NRIName: "10-leakguard-nri"}
	if ownFile {
		n.opts.OwnFile = install.DefaultOwnFile
	}
	if err := n.installer().Reconcile(); err != nil {
		t.Fatal(err)
	}
	if n.loaded() != "bridge,portmap,leakguard" {
		t.Fatalf("installed chain: %s", n.loaded())
	}
	return n
}

func (n *node) installer() *install.Installer {
	n.t.Helper()
	in, err := install.New(n.opts)
	if err != nil {
		n.t.Fatal(err)
	}
	return in
}

func (n *node) lgBin() string   { return filepath.Join(n.bin, install.PluginType) }
func (n *node) hookBin() string { return filepath.Join(n.hook, install.HookBinary) }
func (n *node) nriBin() string  { return filepath.Join(n.nri, "10-leakguard-nri") }

// loaded is the chain a runtime loads now, as go-cni does.
func (n *node) loaded() string {
	list, _, err := cnitest.LoadFirst(n.conf)
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.Join(cnitest.PluginTypes(list), ",")
}

func (n *node) writeState(s nristate.State) {
	n.t.Helper()
	if err := nristate.Write(n.state, s); err != nil {
		n.t.Fatal(err)
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// snapshot is every file's content under the node's dirs.
func (n *node) snapshot() map[string]string {
	n.t.Helper()
	m := map[string]string{}
	for _, d := range []string{n.conf, n.bin, n.hook, n.nri} {
		es, err := os.ReadDir(d)
		if err != nil {
			n.t.Fatal(err)
		}
		for _, e := range es {
			data, err := os.ReadFile(filepath.Join(d, e.Name()))
			if err != nil {
				n.t.Fatal(err)
			}
			m[filepath.Join(d, e.Name())] = string(data)
		}
	}
	return m
}

// invariants loads the conf dir as a runtime does, over and over while an
// uninstall runs, and records any moment a runtime would break a pod: a
// chain that runs leakguard without its binary, a conf dir that does not
// load, or leakguard-nri reporting connected while the hook is gone.
type invariants struct {
	n      *node
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	broken []string
	loads  int
}

func (n *node) checkInvariants() *invariants {
	iv := &invariants{n: n, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(iv.done)
		for {
			select {
			case <-iv.stop:
				return
			default:
			}
			iv.once()
		}
	}()
	return iv
}

func (iv *invariants) once() {
	n := iv.n
	// The state first, then the hook: a hook removed after a disconnect
	// read here is fine; one missing while the plugin still says connected
	// is not.
	s, serr := nristate.Read(n.state)
	connected := serr == nil && s.ConnectedAt(time.Now())
	hookThere := exists(n.hookBin())
	// The binary first, then the chain, for the same reason: the entry goes
	// before the binary, so a binary already gone when a chain still
	// running leakguard is loaded is a real break; the other order flags an
	// entry removed and a binary removed between the two reads.
	binThere := exists(n.lgBin())
	chain := n.loaded()
	if strings.HasPrefix(chain, "error") && strings.Contains(chain, "no such file or directory") {
		// A file removed between the listing and the read (the own file):
		// no removal can avoid it, and a runtime reloads on the removal's
		// own event. The very next load must succeed.
		chain = n.loaded()
	}
	var bad string
	switch {
	case strings.HasPrefix(chain, "error"):
		bad = chain
	case strings.Contains(chain, install.PluginType) && !binThere:
		bad = "chain " + chain + " runs leakguard, whose binary is gone"
	case connected && !hookThere:
		bad = "leakguard-nri reports connected, the hook is gone"
	}
	iv.mu.Lock()
	iv.loads++
	if bad != "" && len(iv.broken) < 10 {
		iv.broken = append(iv.broken, bad)
	}
	iv.mu.Unlock()
}

func (iv *invariants) end(t *testing.T) {
	t.Helper()
	close(iv.stop)
	<-iv.done
	iv.once()
	if len(iv.broken) > 0 {
		t.Fatalf("a runtime would have broken pods (%d loads):\n%s", iv.loads, strings.Join(iv.broken, "\n"))
	}
	if iv.loads < 5 {
		t.Fatalf("only %d loads of the conf dir while uninstalling", iv.loads)
	}
}

// timeline records, through one inotify instance (in the order the kernel
// saw them), the events on the given dirs.
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
	t.Cleanup(func() { w.Close() })
	return tl
}

func (tl *timeline) stop() []fsnotify.Event {
	time.Sleep(50 * time.Millisecond)
	tl.w.Close()
	<-tl.done
	return tl.events
}

func first(evs []fsnotify.Event, path string, op fsnotify.Op) int {
	for i, e := range evs {
		if e.Name == path && e.Op.Has(op) {
			return i
		}
	}
	return -1
}

func stopOpts(f *apifake.Server, n *node, in *install.Installer, logs *strings.Builder) ondelete.Options {
	return ondelete.Options{
		Installer: in, ServiceAccountDir: f.SADir, Getenv: f.Env(), NRIState: n.state,
		Timeout: 5 * time.Second, Settle: 200 * time.Millisecond,
		Log: slog.New(slog.NewJSONHandler(logs, nil)),
	}
}

// The DaemonSet is deleted, and leakguard-nri (the pod's other container)
// disconnects a moment later: the entry goes first, then leakguard's
// binary, then — once leakguard-nri is disconnected — the hook and the NRI
// plugin. A runtime loading the conf dir throughout never sees an entry
// whose binary is gone, nor a connected plugin without its hook.
func TestStopUninstallsInOrder(t *testing.T) {
	for _, c := range []struct {
		name    string
		ownFile bool
		gone    func(f *apifake.Server)
	}{
		{"gone", false, func(f *apifake.Server) { f.DSAnswer = apifake.NotFound }},
		{"deleting, own file", true, func(f *apifake.Server) {
			f.DS.DeletionTimestamp = ptrNow()
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t, c.ownFile)
			f := apifake.New(t)
			f.Set(c.gone)
			n.writeState(nristate.State{PID: 42, Connected: true, Since: time.Now(), Updated: time.Now()})
			entryFile := filepath.Join(n.conf, "10-podnet.conflist")
			entryOp := fsnotify.Create // the rename of the rewritten primary onto it
			if c.ownFile {
				entryFile, entryOp = filepath.Join(n.conf, install.DefaultOwnFile), fsnotify.Remove
			}
			tl := record(t, n.conf, n.bin, n.hook, n.nri, n.run)
			iv := n.checkInvariants()
			const disconnectAfter = 500 * time.Millisecond
			go func() {
				time.Sleep(disconnectAfter)
				now := time.Now()
				n.writeState(nristate.State{PID: 42, Connected: false, Since: now, Updated: now})
			}()
			var logs strings.Builder
			begin := time.Now()
			res := ondelete.Stop(context.Background(), stopOpts(f, n, n.installer(), &logs))
			took := time.Since(begin)
			iv.end(t)
			evs := tl.stop()
			if !res.Verdict.Uninstall || res.Err != nil {
				t.Fatalf("Stop = %+v\n%s", res, logs.String())
			}
			entry := first(evs, entryFile, entryOp)
			lg := first(evs, n.lgBin(), fsnotify.Remove)
			disc := first(evs, n.state, fsnotify.Create)
			hook := first(evs, n.hookBin(), fsnotify.Remove)
			nri := first(evs, n.nriBin(), fsnotify.Remove)
			if entry < 0 || entry >= lg || lg >= disc || disc >= hook || disc >= nri {
				t.Fatalf("events: entry %d, leakguard %d, NRI disconnected %d, hook %d, NRI plugin %d; want them in that order:\n%v",
					entry, lg, disc, hook, nri, evs)
			}
			if took < disconnectAfter+200*time.Millisecond {
				t.Fatalf("Stop took %v: the hook went before the settle time after the disconnect", took)
			}
			for _, p := range []string{n.lgBin(), n.hookBin(), n.nriBin()} {
				if exists(p) {
					t.Errorf("%s still there", p)
				}
			}
			if got := n.loaded(); got != "bridge,portmap" {
				t.Fatalf("runtime loads %s", got)
			}
			if !strings.Contains(logs.String(), "the DaemonSet is deleted: uninstalling leakguard") {
				t.Fatalf("log:\n%s", logs.String())
			}
		})
	}
}

func ptrNow() *metav1.Time { t := metav1.Now(); return &t }

func mkfifo(path string) error { return unix.Mkfifo(path, 0o644) }

// The DaemonSet is deleted but leakguard-nri keeps reporting connected (a
// pre-installed plugin lives as long as containerd): the entry and
// leakguard go, the hook and the NRI plugin stay, and the log says why,
// within the timeout.
func TestStopKeepsTheHookWhileNRIIsConnected(t *testing.T) {
	n := newNode(t, false)
	f := apifake.New(t)
	f.Set(func(f *apifake.Server) { f.DSAnswer = apifake.NotFound })
	stopBeat := make(chan struct{})
	beat := func() {
		n.writeState(nristate.State{PID: 42, Connected: true, Since: time.Now().Add(-time.Hour), Updated: time.Now()})
	}
	beat()
	go func() { // its heartbeat
		for {
			select {
			case <-stopBeat:
				return
			case <-time.After(200 * time.Millisecond):
				beat()
			}
		}
	}()
	defer close(stopBeat)
	iv := n.checkInvariants()
	var logs strings.Builder
	o := stopOpts(f, n, n.installer(), &logs)
	o.Timeout = time.Second
	begin := time.Now()
	res := ondelete.Stop(context.Background(), o)
	took := time.Since(begin)
	iv.end(t)
	if !res.Verdict.Uninstall || res.Err == nil || !strings.Contains(res.Err.Error(), "still reports it is connected") {
		t.Fatalf("Stop = %+v", res)
	}
	if took > 2*time.Second {
		t.Fatalf("Stop took %v with a 1s timeout", took)
	}
	if !slices.Equal(res.Report.Kept, []string{n.hookBin(), n.nriBin()}) || !slices.Equal(res.Report.Binaries, []string{n.lgBin()}) {
		t.Fatalf("report %+v", res.Report)
	}
	if exists(n.lgBin()) || !exists(n.hookBin()) || !exists(n.nriBin()) || n.loaded() != "bridge,portmap" {
		t.Fatalf("after Stop: leakguard %v, hook %v, NRI %v, chain %s", exists(n.lgBin()), exists(n.hookBin()), exists(n.nriBin()), n.loaded())
	}
	if !strings.Contains(logs.String(), `"msg":"uninstalled in part"`) || !strings.Contains(logs.String(), "still reports it is connected") {
		t.Fatalf("log:\n%s", logs.String())
	}
}

// What leakguard-nri's state file says when the DaemonSet is gone, and
// whether the hook goes with the rest.
func TestStopHookByNRIState(t *testing.T) {
	cases := []struct {
		name     string
		state    func(n *node)
		noState  bool // --nri-state ""
		removed  bool
		inReason string
	}{
		{"no state file", func(*node) {}, false, true, ""},
		{"stale: its writer is gone", func(n *node) {
			old := time.Now().Add(-nristate.StaleAfter - time.Minute)
			n.writeState(nristate.State{PID: 42, Connected: true, Since: old, Updated: old})
		}, false, true, ""},
		{"disconnected long ago", func(n *node) {
			n.writeState(nristate.State{PID: 42, Connected: false, Since: time.Now().Add(-time.Minute), Updated: time.Now()})
		}, false, true, ""},
		{"unreadable (a FIFO)", func(n *node) {
			if err := mkfifo(n.state); err != nil {
				n.t.Fatal(err)
			}
		}, false, false, "unreadable"},
		{"no state file configured", func(*node) {}, true, false, "--nri-state is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t, false)
			f := apifake.New(t)
			f.Set(func(f *apifake.Server) { f.DSAnswer = apifake.NotFound })
			c.state(n)
			var logs strings.Builder
			o := stopOpts(f, n, n.installer(), &logs)
			o.Timeout = 700 * time.Millisecond
			if c.noState {
				o.NRIState = ""
			}
			res := ondelete.Stop(context.Background(), o)
			if !res.Verdict.Uninstall || exists(n.lgBin()) || n.loaded() != "bridge,portmap" {
				t.Fatalf("Stop = %+v; chain %s", res, n.loaded())
			}
			if exists(n.hookBin()) == c.removed || exists(n.nriBin()) == c.removed {
				t.Fatalf("hook there %v, NRI plugin there %v; want removed=%v (%+v)", exists(n.hookBin()), exists(n.nriBin()), c.removed, res)
			}
			if c.removed != (res.Err == nil) || (res.Err != nil && !strings.Contains(res.Err.Error(), c.inReason)) {
				t.Fatalf("Err = %v", res.Err)
			}
		})
	}
}

// Anything but a DaemonSet that is gone or being deleted changes nothing on
// the node, and says why; a hanging API server is bounded by the timeout.
func TestStopKeepsEverything(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(f *apifake.Server)
		env    func(f *apifake.Server) func(string) string
		reason string
	}{
		{"daemonset present", func(*apifake.Server) {}, nil, "exists: a restart or an upgrade"},
		{"apifake.Forbidden", func(f *apifake.Server) { f.DSAnswer = apifake.Forbidden }, nil, "access denied"},
		{"API server hangs", func(f *apifake.Server) { f.PodAnswer = apifake.Hang }, nil, "did not answer in time"},
		{"apifake.Malformed JSON", func(f *apifake.Server) { f.DSAnswer = apifake.Malformed }, nil, "cannot read DaemonSet"},
		{"POD_NAME missing", func(*apifake.Server) {}, func(f *apifake.Server) func(string) string {
			env := f.Env()
			return func(k string) string {
				if k == ondelete.EnvPod {
					return ""
				}
				return env(k)
			}
		}, "POD_NAME"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t, false)
			f := apifake.New(t)
			f.Set(c.setup)
			before := n.snapshot()
			var logs strings.Builder
			o := stopOpts(f, n, n.installer(), &logs)
			o.Timeout = time.Second
			if c.env != nil {
				o.Getenv = c.env(f)
			}
			begin := time.Now()
			res := ondelete.Stop(context.Background(), o)
			if took := time.Since(begin); took > 2*time.Second {
				t.Fatalf("Stop took %v with a 1s timeout", took)
			}
			if res.Verdict.Uninstall || !strings.Contains(res.Verdict.Reason, c.reason) {
				t.Fatalf("Verdict %+v", res.Verdict)
			}
			if after := n.snapshot(); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("the node changed:\nbefore %v\nafter  %v", before, after)
			}
			if !strings.Contains(logs.String(), "leakguard stays installed") || !strings.Contains(logs.String(), c.reason) {
				t.Fatalf("log:\n%s", logs.String())
			}
		})
	}
}
