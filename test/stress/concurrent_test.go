package stress

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

type variant struct {
	pin    bool
	leaked bool
}

func (v variant) String() string {
	s := "alive"
	if v.leaked {
		s = "leaked"
	}
	if v.pin {
		return s + "-pinned"
	}
	return s
}

var variants = []variant{{false, false}, {false, true}, {true, false}, {true, true}}

// size.pods pods ADD at once through cnitool (bridge + host-local, then
// leakguard), then DEL at once, their netns alive or leaked (even pods by a
// socket held by leaksim, odd ones by an nsfs fd held by a helper process;
// paths removed before DEL), with and without pinNetns. Every DEL succeeds
// and leaves a clean node; no other node link is touched; GC then drops
// every tombstone.
func TestConcurrentAddDel(t *testing.T) {
	for _, v := range variants {
		t.Run(v.String(), func(t *testing.T) { concurrentAddDel(t, v) })
	}
}

func concurrentAddDel(t *testing.T, v variant) {
	n := newNode(t, v.pin)
	n.addDecoy()
	pods := n.newPods(size.pods)

	start := time.Now()
	if errs := failures(parallel(pods, n.add)); len(errs) > 0 {
		t.Fatalf("%d of %d concurrent ADDs failed, first: %v", len(errs), len(pods), errs[0])
	}
	addTime := time.Since(start)
	n.assertRecorded(pods)

	if v.leaked {
		for _, p := range pods {
			if err := n.leak(p, leakHow(p.i%2)); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := n.links()

	start = time.Now()
	errs := failures(parallel(pods, n.del))
	delTime := time.Since(start)
	for _, err := range errs {
		t.Errorf("DEL: %v", err)
	}
	left := n.leftovers(pods)
	for _, w := range n.wrongDeletions(before, pods) {
		t.Error(w)
	}
	afterGC := n.collect(pods)

	report(t, "%d pods: %d ADDs in %v, %d DELs in %v (%d failed); left after DEL: %s; tombstones after GC: %d",
		len(pods), len(pods), addTime.Round(time.Millisecond), len(pods), delTime.Round(time.Millisecond), len(errs), left, len(afterGC[tombstone]))
	if left.total() > 0 {
		t.Errorf("DEL left %s: %v", left, left.items())
	}
}

// size.dels DELs of one attachment at once (alive or leaked, with and
// without pinNetns), leakguard's own step exec'd directly as libcni would:
// all succeed, one does the work, and the chain's DEL that follows leaves a
// clean node. (The chain itself is not run 8 times at once: bridge v1.10
// fails a DEL that loses the race to delete the pod's eth0, "no such
// device", a check-then-delete in ip.DelLinkByNameAddr.)
func TestConcurrentDelsOfOneAttachment(t *testing.T) {
	for _, v := range variants {
		t.Run(v.String(), func(t *testing.T) {
			n := newNode(t, v.pin)
			n.addDecoy()
			p := n.newPod(0)
			if err := n.add(p); err != nil {
				t.Fatal(err)
			}
			n.assertRecorded([]*pod{p})
			if v.leaked {
				if err := n.leak(p, bySocket); err != nil {
					t.Fatal(err)
				}
			}
			before := n.links()
			same := make([]*pod, size.dels)
			for i := range same {
				same[i] = p
			}
			start := time.Now()
			errs := failures(parallel(same, func(p *pod) error {
				_, err := runBounded(n.leakguardCmd("DEL", p), nil)
				return err
			}))
			delTime := time.Since(start)
			for _, err := range errs {
				t.Errorf("leakguard DEL: %v", err)
			}
			if err := n.del(p); err != nil {
				t.Errorf("chain DEL after them: %v", err)
			}
			left := n.leftovers([]*pod{p})
			for _, w := range n.wrongDeletions(before, []*pod{p}) {
				t.Error(w)
			}
			afterGC := n.collect([]*pod{p})
			report(t, "%d concurrent DELs of one attachment in %v (%d failed), then the chain's; left after DEL: %s; tombstones after GC: %d",
				len(same), delTime.Round(time.Millisecond), len(errs), left, len(afterGC[tombstone]))
			if left.total() > 0 {
				t.Errorf("DEL left %s: %v", left, left.items())
			}
		})
	}
}

// assertRecorded checks every pod has its record and host veth after ADD.
func (n *node) assertRecorded(pods []*pod) {
	n.t.Helper()
	links := n.links()
	for _, p := range pods {
		path := filepath.Join(n.stateDir, n.key(p).Name()+".json")
		if _, err := os.Stat(path); err != nil {
			n.t.Fatalf("pod %d: no record after ADD: %v", p.i, err)
		}
		if links[p.host.Index] != p.host {
			n.t.Fatalf("pod %d: host veth %s missing after ADD", p.i, p.host)
		}
	}
}

// collect runs GC (cnitool's, without a list) once the pods are deleted:
// it must succeed and drop every tombstone, and leave nothing else.
func (n *node) collect(pods []*pod) leftovers {
	n.t.Helper()
	if err := n.gc(); err != nil {
		n.t.Errorf("GC: %v", err)
	}
	l := n.leftovers(pods)
	if l.total() > 0 || len(l[tombstone]) > 0 {
		n.t.Errorf("after GC: %s: %v", l, l.items())
	}
	return l
}
