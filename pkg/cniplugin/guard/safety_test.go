package guard_test

import (
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/test/nsutil"
)

// After the leak, the main plugin re-creates the same deterministic host veth
// name for the next sandbox of the pod (deleting the stale one first, as
// tke-eni-style plugins do); the old sandbox's DEL arrives late and must not
// touch the new veth.
func TestLateDelSparesReusedHostName(t *testing.T) {
	name := "lgt-pod-a"
	f := newFixtureWithHost(t, name)
	f.add("1.0.0")
	oldIndex := f.hostVeth.Index
	nsutil.LeakBySocket(t, f.pod)

	inNS(t, f.node, func() error { // the main plugin's "delete stale host veth"
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	next := nsutil.NewNS(t)
	newHost, _ := f.attach(next, name)
	if newHost.Index == oldIndex {
		t.Fatalf("test premise: the new veth got the old ifindex %d", oldIndex)
	}

	if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
		t.Fatalf("late DEL: %v", err)
	}
	f.mustExist(name, newHost.Index)
}

// Same name and ifindex but another MAC: not ours, nothing deleted.
func TestMACMismatchDeletesNothing(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	nsutil.LeakBySocket(t, f.pod)
	inNS(t, f.node, func() error {
		l, err := netlinksafe.LinkByName(f.hostVeth.Name)
		if err != nil {
			return err
		}
		return netlink.LinkSetHardwareAddr(l, net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0x99})
	})
	if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.mustExist(f.hostVeth.Name, f.hostVeth.Index)
	if f.loadRecord() != nil {
		t.Fatal("a mismatching link is not the pod's: the record should be forgotten")
	}
}

// The record points at another ifindex than the link with the recorded name:
// identity is the ifindex, so the named link is not deleted.
func TestIfindexMismatchDeletesNothing(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	nsutil.LeakBySocket(t, f.pod)

	// An unrelated pod on the node.
	other := nsutil.NewNS(t)
	otherHost, _ := f.attach(other, "")
	r := f.loadRecord()
	r.HostLinks[0].Index = otherHost.Index // name and MAC stay the leaked pod's
	f.saveRecord(r)

	if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.mustExist(otherHost.Name, otherHost.Index)
	f.mustExist(f.hostVeth.Name, f.hostVeth.Index)
}

// A record that matches a veth in every field but whose peer is in the host
// netns itself (the peer check) is left alone.
func TestPeerInHostNetnsIsNeverDeleted(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	nsutil.LeakBySocket(t, f.pod)

	var a, b netlink.Link
	inNS(t, f.node, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lgt-ha"}, PeerName: "lgt-hb"}); err != nil {
			return err
		}
		var err error
		if a, err = netlinksafe.LinkByName("lgt-ha"); err != nil {
			return err
		}
		b, err = netlinksafe.LinkByName("lgt-hb")
		return err
	})
	r := f.loadRecord()
	h := &r.HostLinks[0]
	h.Name, h.Index, h.MAC, h.PeerIndex = "lgt-ha", a.Attrs().Index, a.Attrs().HardwareAddr.String(), b.Attrs().Index
	f.saveRecord(r)

	if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.mustExist("lgt-ha", a.Attrs().Index)
	f.mustExist("lgt-hb", b.Attrs().Index)
}
