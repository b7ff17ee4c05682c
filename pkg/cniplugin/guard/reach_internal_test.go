package guard

import (
	"errors"
	"testing"

	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/netns/nsreach"
)

// A failed re-walk must not leave the view empty: the next question (DEL
// asks once per prevResult link) would then find every netns resolved and
// none reachable, and take any link's netns for a leaked one.
func TestFailedRewalkKeepsTheView(t *testing.T) {
	gone := nsreach.Set{nsident.Identity{Dev: 4, Ino: 1}: {Via: nsreach.ViaProcess, Path: "/proc/0/ns/net"}}
	r := &reachView{set: gone, walk: func() (nsreach.Set, error) { return nil, errors.New("walk failed") }}
	for i := 1; i <= 2; i++ {
		ok, err := r.NSIDReachable(7)
		if err == nil && !ok {
			t.Fatalf("question %d: nsid 7 judged unreachable although the view is unresolved", i)
		}
	}
	if !r.Reachable(nsident.Identity{Dev: 4, Ino: 1}) {
		t.Fatal("a failed re-walk emptied the view: a walked netns is no longer reachable")
	}
}

// Churn does not starve the answer: only the netns the walk could not
// resolve are looked for again; a netns that only the fresh walk sees, and
// that vanishes in turn, is not waited for.
func TestRewalkLooksOnlyForTheUnresolved(t *testing.T) {
	dead := nsreach.Ref{Via: nsreach.ViaProcess, Path: "/proc/0/ns/net"}
	first, later := nsident.Identity{Dev: 4, Ino: 1}, nsident.Identity{Dev: 4, Ino: 2}
	walks := 0
	r := &reachView{set: nsreach.Set{first: dead}, walk: func() (nsreach.Set, error) {
		walks++
		return nsreach.Set{later: dead}, nil // first is gone; later came and went
	}}
	ok, err := r.NSIDReachable(7)
	if err != nil || ok {
		t.Fatalf("NSIDReachable = %v, %v; want false, nil once the vanished netns is reached by nothing", ok, err)
	}
	if walks != 1 {
		t.Fatalf("%d fresh walks, want 1", walks)
	}
}
