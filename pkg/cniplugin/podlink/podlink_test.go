package podlink_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/test/nsutil"
)

func do(t *testing.T, n ns.NetNS, f func() error) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}

// Discover keeps only veth peers that are on the host and pair with the
// pod's interface; a veth pair living wholly inside the pod and a bridge
// yield no host link, with reasons.
func TestDiscover(t *testing.T) {
	node, pod := nsutil.NewNS(t), nsutil.NewNS(t)
	var host, cont netlinkIface
	do(t, pod, func() error {
		h, c, err := ip.SetupVeth("eth0", 1500, "", node)
		host, cont = netlinkIface{h.Index, h.Name, h.HardwareAddr.String()}, netlinkIface{c.Index, c.Name, c.HardwareAddr.String()}
		if err != nil {
			return err
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "inner0"}, PeerName: "inner1"}); err != nil {
			return err
		}
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}})
	})
	var d *podlink.Discovery
	do(t, node, func() error {
		var err error
		d, err = podlink.Discover(pod, "eth0", []string{"eth0", "inner0", "br0", "missing0"}, nil)
		return err
	})
	if len(d.Host) != 1 {
		t.Fatalf("want exactly the eth0 peer, got %+v", d.Host)
	}
	h := d.Host[0]
	if h.Name != host.name || h.Index != host.index || h.MAC != host.mac || h.Kind != "veth" || h.PeerIndex != cont.index || h.NetNSID < 0 {
		t.Fatalf("host link %+v does not describe %+v paired with %+v", h, host, cont)
	}
	if len(d.Container) != 3 || len(d.Skipped) != 3 {
		t.Fatalf("want 3 container interfaces and 3 skipped (inner0, br0, missing0): %+v / %q", d.Container, d.Skipped)
	}
	do(t, node, func() error {
		_, err := podlink.Discover(pod, "missing0", []string{"missing0"}, nil)
		if err == nil {
			t.Error("a missing CNI_IFNAME must fail discovery")
		}
		return nil
	})

	// Verify names every difference; Reap deletes nothing on a mismatch.
	do(t, node, func() error {
		bad := h
		bad.Name, bad.MAC, bad.NetNSID = "other", "02:00:00:00:00:09", h.NetNSID+1
		_, err := podlink.Verify(bad)
		var mm *podlink.MismatchError
		if !errors.As(err, &mm) || len(mm.Reasons) != 3 {
			t.Errorf("Verify(%+v) = %v; want 3 reasons", bad, err)
		}
		if deleted, err := podlink.Reap(bad); deleted || !errors.As(err, &mm) || !strings.Contains(err.Error(), "MAC") {
			t.Errorf("Reap on mismatch = %v, %v", deleted, err)
		}
		if _, err := netlink.LinkByIndex(h.Index); err != nil {
			t.Errorf("host veth must survive a mismatching Reap: %v", err)
		}
		if deleted, err := podlink.Reap(h); !deleted || err != nil {
			t.Errorf("Reap of the recorded link = %v, %v", deleted, err)
		}
		if _, err := podlink.Verify(h); !errors.Is(err, podlink.ErrGone) {
			t.Errorf("Verify after Reap = %v, want ErrGone", err)
		}
		if deleted, err := podlink.Reap(h); deleted || err != nil {
			t.Errorf("second Reap = %v, %v; want nothing, no error", deleted, err)
		}
		return nil
	})
}

type netlinkIface struct {
	index int
	name  string
	mac   string
}

// Remains is the one answer to "is any recorded link still there": true only
// for a link that is exactly as recorded; a freed ifindex and an ifindex now
// naming another link both mean the recorded link is gone.
func TestRemains(t *testing.T) {
	node, pod := nsutil.NewNS(t), nsutil.NewNS(t)
	var id podlink.Identity
	do(t, pod, func() error {
		_, _, err := ip.SetupVeth("eth0", 1500, "", node)
		return err
	})
	do(t, node, func() error {
		d, err := podlink.Discover(pod, "eth0", []string{"eth0"}, nil)
		if err != nil || len(d.Host) != 1 {
			t.Fatalf("discover: %v %+v", err, d)
		}
		id = d.Host[0]
		if remain, err := podlink.Remains(nil, []podlink.Identity{id}); !remain || err != nil {
			t.Errorf("Remains(recorded, present) = %v, %v; want true", remain, err)
		}
		if _, err := podlink.Reap(id); err != nil {
			t.Fatal(err)
		}
		if remain, err := podlink.Remains(nil, []podlink.Identity{id}); remain || err != nil {
			t.Errorf("Remains(freed ifindex) = %v, %v; want false", remain, err)
		}
		// Another link now holds the recorded ifindex.
		other := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: id.Name, Index: id.Index}, PeerName: "otherpeer"}
		if err := netlink.LinkAdd(other); err != nil {
			t.Fatalf("create a link at ifindex %d: %v", id.Index, err)
		}
		if _, err := podlink.Verify(id); err == nil {
			t.Fatal("a new veth at the recorded ifindex verified as the recorded one")
		}
		if remain, err := podlink.Remains(nil, []podlink.Identity{id}); remain || err != nil {
			t.Errorf("Remains(ifindex taken by another link) = %v, %v; want false", remain, err)
		}
		// One remaining link among gone ones is enough.
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-remains"}}); err != nil {
			t.Fatal(err)
		}
		l, err := netlinksafe.LinkByName("br-remains")
		if err != nil {
			t.Fatal(err)
		}
		if remain, err := podlink.Remains(nil, []podlink.Identity{id, podlink.HostIdentity(l)}); !remain || err != nil {
			t.Errorf("Remains(gone, present) = %v, %v; want true", remain, err)
		}
		return nil
	})
}
