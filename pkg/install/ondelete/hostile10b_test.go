package ondelete_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/install/ondelete"
	"github.com/leakguard/leakguard/test/apifake"
)

// `kubectl delete -k` then `kubectl apply -k` (an upgrade by delete and
// apply): the watch sees the DaemonSet deleted, then a new one of the same
// name created; the old pod's SIGTERM comes when its token is refused (the
// ServiceAccount was re-created: the old token is void). Decide keeps
// everything when it sees the replacement; the watch, which saw it too, must
// not decide otherwise: the new pod is installing leakguard on this node.
func TestStopKeepsWhenTheWatchSawAReplacement(t *testing.T) {
	for _, c := range []struct {
		name   string
		events []string
	}{
		{"deleted then added", []string{"DELETED", "ADDED"}},
		{"being deleted, deleted, then added and modified", []string{"MODIFIED-deleting", "DELETED", "ADDED", "MODIFIED"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t, false)
			f := apifake.New(t)
			w := startWatcher(t, f)
			old := f.DS
			repl := f.DS
			repl.UID = "33333333-0000-4000-8000-000000000000"
			for _, ev := range c.events {
				switch ev {
				case "MODIFIED-deleting":
					d := old
					d.DeletionTimestamp = ptrNow()
					f.SendWatch("MODIFIED", d)
				case "DELETED":
					d := old
					d.DeletionTimestamp = ptrNow()
					f.SendWatch("DELETED", d)
				default:
					f.SendWatch(ev, repl)
				}
			}
			// The events are read before the SIGTERM (the old pod is
			// stopped by the garbage collector after the new DaemonSet
			// exists).
			time.Sleep(200 * time.Millisecond)
			f.Set(func(f *apifake.Server) { f.RejectToken = true; f.DS = repl })
			before := n.snapshot()
			var logs strings.Builder
			o := stopOpts(f, n, n.installer(), &logs)
			o.Watcher = w
			res := ondelete.Stop(context.Background(), o)
			if res.Verdict.Uninstall {
				t.Fatalf("Verdict %+v: uninstalled while the watch had seen the DaemonSet re-created\n%s", res.Verdict, logs.String())
			}
			if after := n.snapshot(); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("the node changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// waitWatches waits until the fake has opened n watches in all.
func waitWatches(t *testing.T, f *apifake.Server, n int64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for f.Watches.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d watches opened in %v, want %d", f.Watches.Load(), within, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The API server ends every watch (timeoutSeconds, a restart of it): the
// DaemonSet deleted between two watches must still be seen. A new watch
// from nothing only lists what exists; one from the last resourceVersion
// seen replays what happened in between.
func TestWatchSeesADeletionBetweenWatches(t *testing.T) {
	n := newNode(t, false)
	f := apifake.New(t)
	w := startWatcher(t, f)
	f.EndWatches()
	d := f.DS
	d.DeletionTimestamp = ptrNow()
	f.SendWatch("DELETED", d) // no watch open: only the history has it
	f.Set(func(f *apifake.Server) { f.DSGone = true; f.DSAnswer = apifake.NotFound })
	waitWatches(t, f, 2, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // the replay read
	f.Set(func(f *apifake.Server) { f.RejectToken = true })
	var logs strings.Builder
	o := stopOpts(f, n, n.installer(), &logs)
	o.Watcher = w
	res := ondelete.Stop(context.Background(), o)
	if !res.Verdict.Uninstall || res.Err != nil {
		t.Fatalf("Stop = %+v (watches from %q)\n%s", res, f.WatchRVs, logs.String())
	}
}

// A watch is opened again from the last resourceVersion seen; from one the
// server no longer has (410 Gone) it starts anew, at once.
func TestWatchReopensFromWhereItWas(t *testing.T) {
	f := apifake.New(t)
	startWatcher(t, f)
	f.SendWatch("MODIFIED", f.DS)
	time.Sleep(100 * time.Millisecond)
	f.Set(func(f *apifake.Server) { f.Compacted = 1 << 30 })
	f.EndWatches()
	waitWatches(t, f, 3, 3*time.Second) // the one from the last version (410), then one anew
	f.Set(func(f *apifake.Server) {
		if len(f.WatchRVs) < 3 || f.WatchRVs[1] == "" || f.WatchRVs[2] != "" {
			t.Errorf("watches opened from %q; want the 2nd from the last version seen, the 3rd (after 410) from nothing", f.WatchRVs)
		}
	})
}
