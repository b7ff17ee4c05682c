package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/test/nsutil"
)

// TestLeakPathReused: after the leak, what sits at the old netns path is not
// the pod's netns: a leftover regular file (an unmounted tmpfs mount point),
// or another live netns mounted there. Either way the host veth of the leaked
// pod must be reaped, and the other netns's interfaces left untouched.
func TestLeakPathReused(t *testing.T) {
	for _, c := range chains {
		t.Run(c.name+"/leftover-file", func(t *testing.T) {
			e := newEnv(t, c, "1.1.0", true)
			a, b := e.newPod(0), e.newPod(1)
			e.add(a)
			e.add(b)
			before := e.nodeLinks()
			e.leak(a)
			if err := os.WriteFile(a.path, nil, 0o444); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Remove(a.path) })

			_, err := e.run("del", a)
			e.assertDelErrorNotLeakguard(err)
			e.assertOnlyGone(before, a.host.Attrs().Index)
			if e.podHasEth0(a) {
				t.Errorf("pod A eth0 still alive inside the leaked netns")
			}
			if !e.podHasEth0(b) {
				t.Errorf("neighbour pod B lost its eth0")
			}
		})

		t.Run(c.name+"/other-netns", func(t *testing.T) {
			e := newEnv(t, c, "1.1.0", true)
			a := e.newPod(0)
			e.add(a)
			before := e.nodeLinks()
			e.leak(a)

			// Another sandbox's netns now answers at A's path, with links
			// of its own (not named like the pod interface, which the main
			// plugin's own DEL would delete).
			other := nsutil.NewNS(t)
			oh, err := netlinksafe.NewHandleAt(netns.NsHandle(other.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			defer oh.Close()
			attrs := netlink.NewLinkAttrs()
			attrs.Name = "probe0"
			if err := oh.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "probe1"}); err != nil {
				t.Fatalf("create probe veth in the other netns: %v", err)
			}
			otherBefore := linkSet(t, oh)
			if err := os.WriteFile(a.path, nil, 0o444); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Remove(a.path) })
			if err := unix.Mount(other.Path(), a.path, "none", unix.MS_BIND, ""); err != nil {
				t.Fatalf("mount the other netns at %s: %v", a.path, err)
			}
			t.Cleanup(func() { _ = unix.Unmount(a.path, unix.MNT_DETACH) })

			_, err = e.run("del", a)
			e.assertDelErrorNotLeakguard(err)
			e.assertOnlyGone(before, a.host.Attrs().Index)
			if e.podHasEth0(a) {
				t.Errorf("pod A eth0 still alive inside the leaked netns")
			}
			if got := linkSet(t, oh); fmt.Sprint(got) != fmt.Sprint(otherBefore) {
				t.Errorf("links of the netns now at the path changed: %v -> %v", otherBefore, got)
			}
		})
	}
}

func linkSet(t *testing.T, h netlinksafe.Handle) map[int]linkID {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	out := map[int]linkID{}
	for _, l := range links {
		a := l.Attrs()
		out[a.Index] = linkID{a.Name, a.HardwareAddr.String(), l.Type()}
	}
	return out
}

// assertDelErrorNotLeakguard accepts a DEL error only from the main plugin:
// bridge and ptp fail DEL when the path is not a netns (they tolerate only a
// missing path), and leakguard runs before them.
func (e *env) assertDelErrorNotLeakguard(err error) {
	e.t.Helper()
	if err == nil {
		return
	}
	if strings.Contains(err.Error(), `type="leakguard"`) || !strings.Contains(err.Error(), `type="`+e.chain.mainType()+`"`) {
		e.t.Fatalf("DEL failed outside the main plugin: %v", err)
	}
	e.t.Logf("main plugin's own DEL failed (not leakguard's concern): %v", err)
}
