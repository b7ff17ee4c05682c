package ondelete_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/hook/nristate"
	"github.com/leakguard/leakguard/pkg/install/ondelete"
	"github.com/leakguard/leakguard/test/apifake"
)

// startWatcher starts a Watcher on the fake and waits until its watch is
// open.
func startWatcher(t *testing.T, f *apifake.Server) *ondelete.Watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := ondelete.StartWatcher(ctx, f.Config(t), nil)
	t.Cleanup(func() {
		cancel()
		<-w.Done()
	})
	deadline := time.Now().Add(5 * time.Second)
	for f.Watches.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the watcher opened no watch in 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return w
}

// `kubectl delete -k` deletes the ServiceAccount with the DaemonSet: at
// Stop every request is refused (401), but the watch opened earlier saw the
// DaemonSet go → uninstall.
func TestStopUninstallsByTheWatch(t *testing.T) {
	for _, c := range []struct {
		name   string
		event  string
		reason string
	}{
		{"deleted", "DELETED", "deletion was seen on the watch"},
		{"deleting", "MODIFIED", "being deleted since"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t, false)
			f := apifake.New(t)
			n.writeState(nristate.State{PID: 42, Connected: false, Since: time.Now(), Updated: time.Now()})
			w := startWatcher(t, f)
			ds := f.DS
			ds.DeletionTimestamp = ptrNow()
			f.Set(func(f *apifake.Server) { f.RejectToken = true })
			f.SendWatch(c.event, ds)
			var logs strings.Builder
			o := stopOpts(f, n, n.installer(), &logs)
			o.Watcher = w
			res := ondelete.Stop(context.Background(), o)
			if !res.Verdict.Uninstall || res.Err != nil || !strings.Contains(res.Verdict.Reason, c.reason) || !strings.Contains(res.Verdict.Reason, "Unauthorized") {
				t.Fatalf("Stop = %+v\n%s", res, logs.String())
			}
			if n.loaded() != "bridge,portmap" || exists(n.lgBin()) || exists(n.hookBin()) {
				t.Fatalf("after Stop: chain %s, leakguard %t, hook %t", n.loaded(), exists(n.lgBin()), exists(n.hookBin()))
			}
		})
	}
}

// The watch's word counts only when the API server gives none: nothing seen,
// another DaemonSet's deletion, or an answer that the DaemonSet (a new one
// of the same name) exists → keep everything.
func TestStopKeepsDespiteTheWatch(t *testing.T) {
	for _, c := range []struct {
		name   string
		setup  func(f *apifake.Server)
		reason string
	}{
		{"nothing seen, 401", func(f *apifake.Server) {
			f.Set(func(f *apifake.Server) { f.RejectToken = true })
		}, "Unauthorized"},
		{"another DaemonSet deleted, 401", func(f *apifake.Server) {
			other := f.DS
			other.UID = "11111111-0000-4000-8000-000000000000"
			f.SendWatch("DELETED", other)
			f.Set(func(f *apifake.Server) { f.RejectToken = true })
		}, "Unauthorized"},
		{"deleted, then replaced and answered", func(f *apifake.Server) {
			f.SendWatch("DELETED", f.DS)
			f.Set(func(f *apifake.Server) { f.DS.UID = "22222222-0000-4000-8000-000000000000" })
		}, "was replaced"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t, false)
			f := apifake.New(t)
			w := startWatcher(t, f)
			c.setup(f)
			before := n.snapshot()
			var logs strings.Builder
			o := stopOpts(f, n, n.installer(), &logs)
			o.Watcher = w
			res := ondelete.Stop(context.Background(), o)
			if res.Verdict.Uninstall || !strings.Contains(res.Verdict.Reason, c.reason) {
				t.Fatalf("Verdict %+v\n%s", res.Verdict, logs.String())
			}
			if after := n.snapshot(); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("the node changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}
