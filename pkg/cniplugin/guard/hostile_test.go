package guard_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/test/nsutil"
)

// nobody is a uid that is not the test's (tests run as root).
const nobody = 65534

// A state dir owned by another user is never used: whoever owns it could
// forge records that make DEL judge a netns gone and delete another pod's
// veth. DEL does nothing (and still succeeds), ADD fails naming the owner.
func TestStateDirOfAnotherUserIsNeverUsed(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	record := recordFiles(t, f.stateDir)[0]
	before, _ := filepath.Glob(filepath.Join(f.stateDir, "*"))
	nsutil.LeakBySocket(t, f.pod) // gone: the record would have the veth reaped
	if err := os.Chown(f.stateDir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
		t.Fatalf("DEL must not fail on an unusable state dir: %v", err)
	}
	f.mustExist(f.hostVeth.Name, f.hostVeth.Index)
	if _, err := os.Stat(record); err != nil {
		t.Fatalf("DEL touched a state dir it must not use: %v", err)
	}
	g := f.sibling()
	_, err := g.tryAdd(g.args(g.podPath, g.conf("1.0.0", g.prevResult(), nil)))
	if err == nil || !strings.Contains(err.Error(), f.stateDir) || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("ADD into another user's state dir = %v; want a refusal naming the dir and its owner", err)
	}
	if m, _ := filepath.Glob(filepath.Join(f.stateDir, "*")); len(m) != len(before) {
		t.Fatalf("ADD wrote into another user's state dir: %v", m)
	}
}

// within fails the test when fn has not returned after d; readers blocked on
// fifos are then released (a writer opens each) so that the binary goes on.
func within(t *testing.T, what string, d time.Duration, fifos []string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(d):
		for _, f := range fifos {
			if fd, err := unix.Open(f, unix.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
				unix.Close(fd)
			}
		}
		<-done
		t.Fatalf("%s hung on a FIFO", what)
	}
}

// A FIFO in the state dir never hangs DEL, which holds the attachment's lock
// meanwhile: not as its record, not among the tombstones its sweep reads.
// Each is moved aside, unopened.
func TestFIFOInStateDirNeverHangsDel(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	rec := recordFiles(t, f.stateDir)[0]
	if err := os.Remove(rec); err != nil {
		t.Fatal(err)
	}
	fifos := []string{rec}
	tombDir := filepath.Join(f.stateDir, "tombstones")
	if err := os.Mkdir(tombDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ { // enough for DEL to sweep; every window holds FIFOs
		fifos = append(fifos, filepath.Join(tombDir, fmt.Sprintf("%020d-%s_fifo-%d_eth0.tomb", i+1, netName, i)))
	}
	for _, p := range fifos {
		if err := unix.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	var err error
	within(t, "DEL with a FIFO record", 5*time.Second, fifos, func() { err = f.del(f.podPath, "1.0.0", f.prevResult()) })
	if err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if moved, _ := filepath.Glob(rec + ".corrupt-*"); len(moved) != 1 {
		t.Fatalf("the FIFO record should be moved aside, found %v", moved)
	}
	mustRemovedFile(t, strings.TrimSuffix(rec, ".json")+".lock")

	g := f.sibling()
	g.add("1.0.0")
	within(t, "DEL sweeping FIFO tombstones", 5*time.Second, fifos, func() { err = g.del(g.podPath, "1.0.0", g.prevResult()) })
	if err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if moved, _ := filepath.Glob(filepath.Join(tombDir, "*.corrupt-*")); len(moved) < 7 {
		t.Fatalf("the sweep should move aside the FIFOs of its window, moved %v", moved)
	}
	if n := len(tombstones(t, f.stateDir)); n > 41-7 {
		t.Fatalf("%d tombstones left; the FIFOs of the window should be gone", n)
	}
}

// A record of any size used to be read whole (1 GB: 1.05 GB RSS, 2.7 s).
// DEL now moves an oversized record aside unread, at once.
func TestHugeRecordIsMovedAsideUnread(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	rec := recordFiles(t, f.stateDir)[0]
	if err := os.Truncate(rec, 1<<30); err != nil { // sparse
		t.Fatal(err)
	}
	start := time.Now()
	if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("DEL took %v: the record was read", took)
	}
	moved, _ := filepath.Glob(rec + ".corrupt-*")
	if len(moved) != 1 {
		t.Fatalf("the huge record should be moved aside, found %v", moved)
	}
	if fi, err := os.Stat(moved[0]); err != nil || fi.Size() != 1<<30 {
		t.Fatalf("moved-aside record %v, %v; want it whole", fi, err)
	}
	f.mustExist(f.hostVeth.Name, f.hostVeth.Index) // netns alive: left to the main plugin
}
