package guard_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

// A DEL with the netns alive leaves the host side to the main plugin and
// keeps a tombstone. Once tombstones pile up (no GC ran), a DEL sweeps a
// bounded number of the oldest, dropping those whose links are gone and
// keeping those whose links remain.
func TestDelAliveKeepsTombstoneAndSweepsBounded(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
		t.Fatal(err)
	}
	tombs := tombstones(t, f.stateDir)
	if len(tombs) != 1 {
		t.Fatalf("want one tombstone, got %v", tombs)
	}
	first := tombs[0]
	f.mustExist(f.hostVeth.Name, f.hostVeth.Index)

	st, err := store.Open(f.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ { // pods whose main plugin already cleaned up
		r := f.loadRecordOrTemplate()
		r.ContainerID = "gone-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		r.HostLinks = []podlink.Identity{{Name: "gone", Index: 1 << 30, MAC: "02:00:00:00:00:01", Kind: "veth", NetNSID: 1, PeerIndex: 2}}
		if err := saveTombstone(t, st, r); err != nil {
			t.Fatal(err)
		}
	}

	g := f.sibling()
	g.add("1.0.0")
	if err := g.del(g.podPath, "1.0.0", g.prevResult()); err != nil {
		t.Fatal(err)
	}
	// The sweep looks at a window of 8 at a random place; at most two of
	// them (the first pod's and g's own, whose links remain) are kept.
	after := tombstones(t, f.stateDir)
	if n := len(after); n < 1+40+1-8 || n > 1+40+1-6 {
		t.Fatalf("one sweep should drop 6 to 8 tombstones of 42, left %d", n)
	}
	if _, err := os.Stat(first); err != nil {
		t.Fatalf("the tombstone whose link remains must be kept: %v", err)
	}
}

// Tombstones whose links live on do not shield the others from the sweep
// (the window moves).
func TestSweepGetsPastTombstonesWithLinks(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	st, err := store.Open(f.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	live := f.loadRecord() // its host link exists
	for i := 0; i < 8; i++ {
		r := *live
		r.ContainerID = fmt.Sprintf("old-%d", i)
		if err := saveTombstone(t, st, &r); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 40; i++ {
		r := *live
		r.ContainerID = fmt.Sprintf("gone-%d", i)
		r.HostLinks = []podlink.Identity{{Name: "gone", Index: 1 << 30, MAC: "02:00:00:00:00:09", Kind: "veth", NetNSID: 3, PeerIndex: 2}}
		if err := saveTombstone(t, st, &r); err != nil {
			t.Fatal(err)
		}
	}
	before := len(tombstones(t, f.stateDir))
	for i := 0; i < 5; i++ {
		g := f.sibling()
		g.add("1.0.0")
		if err := g.del(g.podPath, "1.0.0", g.prevResult()); err != nil {
			t.Fatal(err)
		}
	}
	if after := len(tombstones(t, f.stateDir)); after >= before {
		t.Fatalf("5 DELs swept nothing past the oldest tombstones: %d -> %d", before, after)
	}
}

func (f *fixture) loadRecordOrTemplate() *record.Record {
	return &record.Record{Key: record.Key{Network: netName, IfName: "eth0"}, Netns: nsident.Identity{Dev: 4, Ino: 1}}
}

func tombstones(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "tombstones", "*.tomb"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// saveTombstone writes r as a tombstone the way DEL does: save the record,
// then, under its lock, move it to the tombstone dir.
func saveTombstone(t *testing.T, st *store.Store, r *record.Record) error {
	t.Helper()
	if err := st.Save(r); err != nil {
		return err
	}
	l, err := st.Lock(r.Key, time.Second)
	if err != nil {
		return err
	}
	defer l.Release(false)
	_, err = st.Tombstone(r.Key)
	return err
}

// containerd's order: StopPodSandbox's DEL finds the netns alive (tombstone
// kept), the main plugin removes the veth, RemovePodSandbox's DEL comes with
// CNI_NETNS="" and no record. That repeated DEL drops the attachment's own
// tombstone once its links are gone (containerd never runs GC), keeps it
// while they remain, and leaves other attachments' tombstones alone.
func TestRepeatedDelDropsOwnTombstone(t *testing.T) {
	f := newFixture(t)
	f.add("1.1.0")
	g := f.sibling() // another pod, tombstoned, links gone too: not this DEL's
	g.add("1.1.0")
	for _, p := range []*fixture{f, g} {
		if err := p.del(p.podPath, "1.1.0", p.prevResult()); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(tombstones(t, f.stateDir)); n != 2 {
		t.Fatalf("want two tombstones after the alive DELs, got %d", n)
	}

	// Links still there (the main plugin has not cleaned up): kept.
	if err := f.del("", "1.1.0", nil); err != nil {
		t.Fatal(err)
	}
	if n := len(tombstones(t, f.stateDir)); n != 2 {
		t.Fatalf("a tombstone whose links remain must be kept, %d left", n)
	}

	for _, p := range []*fixture{f, g} {
		inNS(t, p.node, func() error { return netlink.LinkDel(p.nodeLink(p.hostVeth.Name)) })
	}
	if err := f.del("", "1.1.0", nil); err != nil {
		t.Fatal(err)
	}
	left := tombstones(t, f.stateDir)
	if len(left) != 1 || !strings.Contains(filepath.Base(left[0]), g.cid) {
		t.Fatalf("want only the other pod's tombstone left, got %v", left)
	}
	ents, err := os.ReadDir(f.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			t.Fatalf("nothing of the deleted attachment should be left, found %s", e.Name())
		}
	}
}

// The repeated DEL without a record keeps a doomed netns's tombstone (gss-
// proxy armed) even once its links are gone: the kernel never frees that
// netns, and the scan and the agent count it for the rest of the boot.
func TestRepeatedDelKeepsDoomedTombstone(t *testing.T) {
	f := newFixture(t)
	f.add("1.1.0")
	r := f.loadRecord()
	r.GSSProxyArmed = true // as checkDoomed found it at an earlier DEL
	f.saveRecord(r)
	if err := f.del(f.podPath, "1.1.0", f.prevResult()); err != nil {
		t.Fatal(err)
	}
	if n := len(tombstones(t, f.stateDir)); n != 1 {
		t.Fatalf("want the doomed netns's tombstone after the alive DEL, got %d", n)
	}
	inNS(t, f.node, func() error { return netlink.LinkDel(f.nodeLink(f.hostVeth.Name)) })
	if err := f.del("", "1.1.0", nil); err != nil {
		t.Fatal(err)
	}
	if n := len(tombstones(t, f.stateDir)); n != 1 {
		t.Fatalf("a doomed netns's tombstone must be kept for the boot, %d left", n)
	}
}
