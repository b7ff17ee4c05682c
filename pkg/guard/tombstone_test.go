package guard_test

import (
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
)

// A DEL with the netns alive leaves the host side to the main plugin and
// keeps a tombstone; once the main plugin removed the link, the next DEL's
// sweep drops the tombstone.
func TestDelAliveKeepsTombstoneUntilLinksGone(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
		t.Fatal(err)
	}
	tombs, _ := filepath.Glob(filepath.Join(f.stateDir, "tombstones", "*.tomb"))
	if len(tombs) != 1 {
		t.Fatalf("want one tombstone, got %v", tombs)
	}
	f.mustExist(f.hostVeth.Name, f.hostVeth.Index)

	// A second DEL-alive while the first tombstone's link still exists keeps both.
	g := f.sibling()
	g.add("1.0.0")
	if err := g.del(g.podPath, "1.0.0", g.prevResult()); err != nil {
		t.Fatal(err)
	}
	if tombs, _ = filepath.Glob(filepath.Join(f.stateDir, "tombstones", "*.tomb")); len(tombs) != 2 {
		t.Fatalf("want two tombstones, got %v", tombs)
	}

	// The main plugin removes the first pod's veth; the next DEL sweeps.
	inNS(t, f.node, func() error {
		l, err := netlink.LinkByIndex(f.hostVeth.Index)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	h := f.sibling()
	h.add("1.0.0")
	if err := h.del(h.podPath, "1.0.0", h.prevResult()); err != nil {
		t.Fatal(err)
	}
	if tombs, _ = filepath.Glob(filepath.Join(f.stateDir, "tombstones", "*.tomb")); len(tombs) != 2 {
		t.Fatalf("first tombstone should be swept, second and third kept: %v", tombs)
	}
}
