// Package scantest holds test-only helpers for the scan: pods wired to a
// throw-away node netns, and the ways a netns stays reachable (a process or
// a thread inside it, a mount in a private mount namespace).
package scantest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/test/nsutil"
)

// Pod is a throw-away pod netns with a veth into the node.
type Pod struct {
	NS ns.NetNS
	ID nsident.Identity
	// Host is the host end, as the node sees it.
	Host podlink.Identity
}

// NewPod creates a pod netns whose eth0 pairs with hostName in node.
func NewPod(t testing.TB, node ns.NetNS, hostName string) *Pod {
	t.Helper()
	p := &Pod{NS: nsutil.NewNS(t)}
	id, err := nsident.OfFd(p.NS.Fd())
	if err != nil {
		t.Fatalf("identify pod netns: %v", err)
	}
	p.ID = id
	err = node.Do(func(ns.NetNS) error {
		v := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: hostName},
			PeerName:  "eth0", PeerNamespace: netlink.NsFd(int(p.NS.Fd())),
		}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("add veth %s: %w", hostName, err)
		}
		l, err := netlinksafe.LinkByName(hostName)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		a := l.Attrs()
		p.Host = podlink.Identity{
			Name: a.Name, Index: a.Index, MAC: a.HardwareAddr.String(), Kind: l.Type(),
			NetNSID: a.NetNsID, PeerIndex: a.ParentIndex, PeerName: "eth0",
		}
		return nil
	})
	if err != nil {
		t.Fatalf("wire pod to node: %v", err)
	}
	if p.Host.NetNSID < 0 {
		t.Fatalf("host veth %s has no link-netnsid", hostName)
	}
	return p
}

// KeepByProcess starts a process inside n, then removes n's path and closes
// n's fd: the process is the only reference left. It is killed at cleanup.
func KeepByProcess(t testing.TB, n ns.NetNS) *exec.Cmd {
	t.Helper()
	want, err := nsident.OfFd(n.Fd())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+n.Path(), "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nsenter: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, "process inside the netns", func() bool {
		got, err := nsident.OfPath(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
		return err == nil && got == want
	})
	dropPath(t, n)
	return cmd
}

// KeepByThread moves one locked OS thread of the test process into n, then
// removes n's path and closes n's fd, and returns the thread's id. The thread
// exits at cleanup.
func KeepByThread(t testing.TB, n ns.NetNS) int {
	t.Helper()
	var tid int
	ready, done := make(chan error), make(chan struct{})
	go func() {
		// Never unlocked: the thread dies with the goroutine rather than
		// going back to the pool in the wrong netns.
		runtime.LockOSThread()
		err := unix.Setns(int(n.Fd()), unix.CLONE_NEWNET)
		tid = unix.Gettid()
		ready <- err
		<-done
	}()
	if err := <-ready; err != nil {
		t.Fatalf("setns thread: %v", err)
	}
	t.Cleanup(func() { close(done) })
	dropPath(t, n)
	return tid
}

// KeepByPrivateMount starts a process in a private copy of our mount
// namespace, then unmounts n's path in ours only and closes n's fd: the bind
// mount in the other mount namespace is the only reference left. The
// process (in our netns) is killed at cleanup.
func KeepByPrivateMount(t testing.TB, n ns.NetNS) *exec.Cmd {
	t.Helper()
	ours, err := nsident.OfPath("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start unshare: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, "private mount namespace", func() bool {
		got, err := nsident.OfPath(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid))
		if err != nil || got == ours {
			return false
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
		return err == nil && string(b) == "sleep\n"
	})
	// Unmount only: removing the file would detach the mount in every
	// mount namespace.
	if err := unix.Unmount(n.Path(), unix.MNT_DETACH); err != nil {
		t.Fatalf("unmount %s: %v", n.Path(), err)
	}
	_ = n.Close()
	return cmd
}

// KeepByMountOnly closes n's fd: its bind mount is the only reference left.
func KeepByMountOnly(t testing.TB, n ns.NetNS) {
	t.Helper()
	_ = n.Close()
}

func dropPath(t testing.TB, n ns.NetNS) {
	t.Helper()
	if err := nsutil.RemovePath(n.Path()); err != nil {
		t.Fatal(err)
	}
	_ = n.Close()
}

func waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
