package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nsDir holds the bind mounts of every netns lgbench creates. lgbench runs
// in a private mount namespace (ip netns exec), so the mounts and with them
// the namespaces vanish when it exits, whatever happens.
type nsDir string

// create makes a fresh netns bind-mounted at dir/name.
func (d nsDir) create(name string) (ns.NetNS, error) {
	path := filepath.Join(string(d), name)
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread is left in the new netns: never unlocked, so the
		// runtime retires it when this goroutine ends.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		errc <- unix.Mount(self, path, "none", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("create netns %s: %w", path, err)
	}
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, err
	}
	if err := n.Do(func(ns.NetNS) error { return setUp("lo") }); err != nil {
		return nil, err
	}
	return n, nil
}

// remove closes n and removes its path; the netns is freed unless something
// else (a pinning socket) still holds it.
func remove(n ns.NetNS) {
	_ = n.Close()
	_ = unix.Unmount(n.Path(), unix.MNT_DETACH)
	_ = os.Remove(n.Path())
}

// leak reproduces the auth_rpcgss leak: a socket created inside n keeps it
// alive after its path is removed. Closing the returned fd frees the netns.
func leak(n ns.NetNS) (int, error) {
	fd := -1
	err := n.Do(func(ns.NetNS) error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("pin netns %s: %w", n.Path(), err)
	}
	remove(n)
	return fd, nil
}

func setUp(name string) error {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

// addCrowd fills the calling thread's netns (a node) with count unrelated
// host veths whose peers live in crowd: on a node they look exactly like
// other pods' veths, the worst case for a plugin that scans links.
func addCrowd(count int, crowd ns.NetNS, tag string) error {
	for i := range count {
		v := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: fmt.Sprintf("%s%05d", tag, i)},
			PeerName:      fmt.Sprintf("%s%05dp", tag, i),
			PeerNamespace: netlink.NsFd(int(crowd.Fd())),
		}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("add crowd veth %s: %w", v.Name, err)
		}
	}
	return nil
}

// linkExists tells whether name exists in the calling thread's netns.
func linkExists(name string) bool {
	_, err := netlinksafe.LinkByName(name)
	return err == nil
}
