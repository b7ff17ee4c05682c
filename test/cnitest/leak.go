package cnitest

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Leaked is a pod netns in the state the auth_rpcgss bug leaves it in: its
// path is gone and no process or nsfs fd holds it, only a kernel object (here
// a socket created inside it, like the bug's RPC client). Unlike
// nsutil.LeakBySocket it keeps the socket so the test can still look inside
// (SIOCGSKNS), which a runtime cannot do.
type Leaked struct {
	Path string
	sock int
}

// Leak turns the live netns n into a leaked one and closes n.
func Leak(n ns.NetNS) (*Leaked, error) {
	l := &Leaked{Path: n.Path(), sock: -1}
	err := n.Do(func(ns.NetNS) error {
		var err error
		l.sock, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create pinning socket in %s: %w", n.Path(), err)
	}
	// Close first: an fd opened through the bind mount keeps it busy.
	_ = n.Close()
	if err := testutils.UnmountNS(n); err != nil {
		l.Release()
		return nil, fmt.Errorf("remove netns path %s: %w", n.Path(), err)
	}
	return l, nil
}

// Handle opens a netlink handle inside the leaked netns, for assertions only.
func (l *Leaked) Handle() (netlinksafe.Handle, error) {
	fd, err := unix.IoctlRetInt(l.sock, unix.SIOCGSKNS)
	if err != nil {
		return netlinksafe.Handle{}, fmt.Errorf("SIOCGSKNS: %w", err)
	}
	defer unix.Close(fd)
	return netlinksafe.NewHandleAt(netns.NsHandle(fd))
}

// Release drops the last reference: the kernel frees the netns.
func (l *Leaked) Release() {
	if l.sock >= 0 {
		unix.Close(l.sock)
		l.sock = -1
	}
}
