package guard_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
