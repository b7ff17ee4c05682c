package guard_test

import (
	"errors"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/test/nsutil"
)

// The leak: the netns stays alive through a socket created inside it (as the
// auth_rpcgss RPC client does) while its path is removed. DEL must reap the
// host veth, and so its peer.
func TestLeakedNetnsBySocketIsReaped(t *testing.T) {
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			f := newFixture(t)
			f.add(v)
			nsutil.LeakBySocket(t, f.pod)
			f.mustExist(f.hostVeth.Name, f.hostVeth.Index) // the leak, as users see it
			if err := f.del(f.podPath, v, prevOrNil(nil)); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			f.mustBeGone(f.hostVeth.Name)
			if f.loadRecord() != nil {
				t.Fatal("record should be forgotten")
			}
		})
	}
}

// Same leak held by an open nsfs fd: we can still look inside and see that
// deleting the host veth removed its peer in the leaked netns too.
func TestLeakedNetnsByFdPeerIsGone(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	nsutil.LeakByFD(t, f.pod)
	if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.mustBeGone(f.hostVeth.Name)
	inNS(t, f.pod, func() error {
		_, err := netlinksafe.LinkByName("eth0")
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			t.Errorf("eth0 in the leaked netns should be gone with its host peer, got err=%v", err)
		}
		return nil
	})
}

// Every way the path can stop naming the recorded netns at DEL.
func TestDelNetnsPathGoneCases(t *testing.T) {
	t.Run("empty CNI_NETNS", func(t *testing.T) {
		f := newFixture(t)
		f.add("1.0.0")
		nsutil.LeakBySocket(t, f.pod)
		if err := f.del("", "1.0.0", f.prevResult()); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		f.mustBeGone(f.hostVeth.Name)
	})

	t.Run("leftover regular file at the path", func(t *testing.T) {
		f := newFixture(t)
		f.add("1.0.0")
		nsutil.LeakBySocket(t, f.pod)
		if err := os.WriteFile(f.podPath, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(f.podPath) })
		if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		f.mustBeGone(f.hostVeth.Name)
	})

	t.Run("different live netns mounted at the path", func(t *testing.T) {
		f := newFixture(t)
		f.add("1.0.0")
		old := f.hostVeth
		nsutil.LeakBySocket(t, f.pod)

		// A new sandbox gets a namespace mounted at the very same path, with
		// its own eth0 wired to the node.
		other := nsutil.NewNS(t)
		newHost, newCont := f.attach(other, "")
		if err := os.WriteFile(f.podPath, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := mountBind(other.Path(), f.podPath); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nsutil.RemovePath(f.podPath) })

		if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		f.mustBeGone(old.Name)
		f.mustExist(newHost.Name, newHost.Index)
		inNS(t, other, func() error {
			l, err := netlinksafe.LinkByName("eth0")
			if err != nil || l.Attrs().Index != newCont.Index {
				t.Errorf("the other netns' eth0 must be untouched: %v %v", l, err)
			}
			return nil
		})
	})

	t.Run("host's own netns as CNI_NETNS", func(t *testing.T) {
		f := newFixture(t)
		f.add("1.0.0")
		nsutil.LeakBySocket(t, f.pod)
		// A host-only veth pair and a bridge: nothing of the host may go.
		var pair, dummy netlink.Link
		inNS(t, f.node, func() error {
			pair = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lgt-hosta"}, PeerName: "lgt-hostb"}
			dummy = &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "lgt-br"}}
			if err := netlink.LinkAdd(pair); err != nil {
				return err
			}
			return netlink.LinkAdd(dummy)
		})
		if err := f.del(f.node.Path(), "1.0.0", f.prevResult()); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		f.mustBeGone(f.hostVeth.Name)
		for _, n := range []string{"lgt-hosta", "lgt-hostb", "lgt-br", "lo"} {
			if f.nodeLink(n) == nil {
				t.Fatalf("host link %s must be untouched", n)
			}
		}
	})
}
