package guard_test

import (
	"os/exec"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/test/nsutil"
)

func (f *fixture) gc(extra map[string]any) error {
	a := &skel.CmdArgs{StdinData: f.conf("1.1.0", nil, extra)}
	return f.node.Do(func(ns.NetNS) error { return f.plugin.GC(a) })
}

func TestGCWithValidAttachments(t *testing.T) {
	for _, key := range []string{"cni.dev/valid-attachments", "cni.dev/attachments"} {
		t.Run(key, func(t *testing.T) {
			live := newFixture(t)
			live.add("1.1.0")
			stale := live.sibling()
			stale.add("1.1.0")

			err := live.gc(map[string]any{key: []map[string]string{{"containerID": live.cid, "ifname": "eth0"}}})
			if err != nil {
				t.Fatalf("GC: %v", err)
			}
			stale.mustBeGone(stale.hostVeth.Name)
			if stale.loadRecord() != nil {
				t.Fatal("stale record should be dropped")
			}
			live.mustExist(live.hostVeth.Name, live.hostVeth.Index)
			if live.loadRecord() == nil {
				t.Fatal("valid attachment's record must stay")
			}
		})
	}
}

// An empty list means every attachment of the network is stale; other
// networks' records are never touched.
func TestGCEmptyListOnlyThisNetwork(t *testing.T) {
	a := newFixture(t)
	a.add("1.1.0")
	other := a.sibling()
	a2 := *other
	a2conf := a2.conf("1.1.0", a2.prevResult(), map[string]any{"name": "other-net"})
	args := a2.args(a2.podPath, a2conf)
	if _, err := a2.tryAdd(args); err != nil {
		t.Fatal(err)
	}
	if err := a.gc(map[string]any{"cni.dev/valid-attachments": []any{}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	a.mustBeGone(a.hostVeth.Name)
	other.mustExist(other.hostVeth.Name, other.hostVeth.Index)
}

// Without a list (as `cnitool gc` sends), only a provably orphaned netns is
// reaped: the leaked pod (held by nothing but a socket inside it); a live
// pod and a pod whose netns a process still holds are untouched.
func TestGCWithoutListReapsOnlyOrphans(t *testing.T) {
	leaked := newFixture(t)
	leaked.add("1.1.0")
	live := leaked.sibling()
	live.add("1.1.0")
	held := leaked.sibling()
	held.add("1.1.0")

	nsutil.LeakBySocket(t, leaked.pod)
	// held: path removed but a process still runs inside it.
	sleeper := exec.Command("sleep", "60")
	if err := held.pod.Do(func(ns.NetNS) error { return sleeper.Start() }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	nsutil.LeakByFD(t, held.pod)
	_ = held.pod.Close()

	if err := leaked.gc(nil); err != nil {
		t.Fatalf("GC: %v", err)
	}
	leaked.mustBeGone(leaked.hostVeth.Name)
	if leaked.loadRecord() != nil {
		t.Fatal("orphan's record should be dropped")
	}
	live.mustExist(live.hostVeth.Name, live.hostVeth.Index)
	held.mustExist(held.hostVeth.Name, held.hostVeth.Index)
	if live.loadRecord() == nil || held.loadRecord() == nil {
		t.Fatal("records of reachable netns must stay")
	}
}

// Tombstones: dropped once their links are gone; their links reaped by GC
// once their netns leaked.
func TestGCTombstones(t *testing.T) {
	f := newFixture(t)
	f.add("1.1.0")
	if err := f.del(f.podPath, "1.1.0", f.prevResult()); err != nil { // netns alive: tombstone
		t.Fatal(err)
	}
	g := f.sibling()
	g.add("1.1.0")
	if err := g.del(g.podPath, "1.1.0", g.prevResult()); err != nil {
		t.Fatal(err)
	}
	// f's pod is then deleted for real (main plugin cleaned the veth), g's leaks.
	inNS(t, f.node, func() error {
		l, err := netlink.LinkByIndex(f.hostVeth.Index)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	nsutil.LeakBySocket(t, g.pod)

	if err := f.gc(nil); err != nil {
		t.Fatalf("GC: %v", err)
	}
	g.mustBeGone(g.hostVeth.Name)
	if tombs := tombstones(t, f.stateDir); len(tombs) != 0 {
		t.Fatalf("tombstones should all be dropped: %v", tombs)
	}
}

// GC judges a record while walking the state dir, then takes its lock: if
// the attachment was re-added in between (a new sandbox under the same key),
// the record under the lock is another one and must be left alone.
func TestGCLeavesAttachmentReAddedSinceTheWalk(t *testing.T) {
	leaked := newFixture(t)
	leaked.plugin.LockTimeout = 10 * time.Second
	leaked.add("1.1.0")
	live := leaked.sibling()
	live.add("1.1.0")
	nsutil.LeakBySocket(t, leaked.pod)

	st, err := store.Open(leaked.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := st.Lock(leaked.key(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- leaked.gc(nil) }()
	time.Sleep(time.Second) // GC has walked and waits for the lock
	r := live.loadRecord()  // a live sandbox, re-added under the leaked key
	r.Key = leaked.key()
	if err := st.Save(r); err != nil {
		t.Fatal(err)
	}
	l.Release(false)
	if err := <-done; err != nil {
		t.Fatalf("GC: %v", err)
	}
	live.mustExist(live.hostVeth.Name, live.hostVeth.Index)
}

// A tombstone whose recorded ifindex now names another link holds nothing
// reapable: GC drops it (podlink.Remains, as leakguardctl reap does) and
// leaves the new link alone.
func TestGCDropsTombstoneWhoseIfindexNamesAnotherLink(t *testing.T) {
	f := newFixture(t)
	f.add("1.1.0")
	if err := f.del(f.podPath, "1.1.0", f.prevResult()); err != nil { // netns alive: tombstone
		t.Fatal(err)
	}
	inNS(t, f.node, func() error {
		l, err := netlink.LinkByIndex(f.hostVeth.Index)
		if err != nil {
			return err
		}
		if err := netlink.LinkDel(l); err != nil {
			return err
		}
		// Same name and ifindex, another object (its peer in the node netns).
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: f.hostVeth.Name, Index: f.hostVeth.Index}, PeerName: "lgt-newpeer"})
	})
	if err := f.gc(nil); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if tombs := tombstones(t, f.stateDir); len(tombs) != 0 {
		t.Fatalf("tombstone of a replaced link should be dropped: %v", tombs)
	}
	f.mustExist(f.hostVeth.Name, f.hostVeth.Index)
}
