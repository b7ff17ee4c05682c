package e2e

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/test/cnitest"
)

// cnitool gc and status on a 1.1.0 conflist (bridge + host-local, then
// leakguard). `cnitool gc` sends no list of valid attachments, and libcni
// first DELs every attachment in its cache; with those cache entries gone
// (the runtime lost track of the pods), only leakguard's own GC can clean
// up, and it must reap exactly the provably orphaned pod.
func TestCnitoolGCAndStatus(t *testing.T) {
	e := newEnv(t, chains[0], "1.1.0", true)
	a, b := e.newPod(0), e.newPod(1)
	e.add(a)
	e.add(b)

	if _, err := e.run("status", b); err != nil {
		t.Fatalf("cnitool status: %v", err)
	}

	e.leak(a)
	for _, p := range []*pod{a, b} {
		if err := os.Remove(cnitest.CacheFile(e.network, p.path, "eth0")); err != nil {
			t.Fatalf("drop libcni cache entry: %v", err)
		}
	}
	before := e.nodeLinks()
	if _, err := e.run("gc", b); err != nil {
		t.Fatalf("cnitool gc: %v", err)
	}
	e.assertOnlyGone(before, a.host.Attrs().Index)
	if e.podHasEth0(a) {
		t.Errorf("leaked pod's eth0 survived GC")
	}
	if recs := e.records(a); len(recs) != 0 {
		t.Errorf("orphan's record survived GC: %v", recs)
	}
	if recs := e.records(b); len(recs) != 1 {
		t.Errorf("live pod's record: want kept, got %v", recs)
	}
	if !e.hostVethAlive(b) {
		t.Errorf("live pod's host veth was reaped by GC")
	}

	// STATUS fails with code 50 once the state dir is unusable.
	if err := unix.Mount("tmpfs", e.stateDir, "tmpfs", unix.MS_RDONLY, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(e.stateDir, unix.MNT_DETACH) })
	_, err := e.run("status", b)
	if err == nil || !strings.Contains(err.Error(), "state dir") {
		t.Fatalf("cnitool status with a read-only state dir: want a failure naming the state dir, got %v", err)
	}
	if err := unix.Unmount(e.stateDir, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if _, err := e.run("del", b); err != nil {
		t.Errorf("DEL of B: %v", err)
	}
}
