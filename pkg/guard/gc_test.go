package guard_test

import (
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"
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
