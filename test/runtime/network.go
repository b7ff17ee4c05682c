package runtime

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Network is a pod network of the host netns no one else on the machine
// uses while the test runs: its own bridge and /24, reserved by an flock so
// that concurrent test processes (another package, another worktree) never
// pick the same one.
type Network struct {
	// Name is the CNI network name (unique per Network, so the CNI result
	// cache entries of /var/lib/cni/results that carry it are ours).
	Name string
	// Bridge is the bridge the pods' host veths are enslaved to.
	Bridge string
	// Subnet is host-local's range.
	Subnet netip.Prefix

	lock *os.File
}

// subnetBase is the /16 the test networks are carved from.
var subnetBase = netip.MustParsePrefix("10.241.0.0/16")

// lockDir holds one lock file per /24 (index 0..255).
func lockDir() string { return filepath.Join(os.TempDir(), "leakguard-runtime-nets") }

// NewNetwork reserves a network and registers its cleanup: host veths still
// enslaved to its bridge, the bridge, and the CNI result cache entries of
// its name. A bridge of that name left by a killed test process (its lock is
// free) is removed first.
func NewNetwork(t testing.TB) *Network {
	t.Helper()
	if err := os.MkdirAll(lockDir(), 0o700); err != nil {
		t.Fatalf("network lock dir: %v", err)
	}
	start := rand.IntN(256)
	for i := range 256 {
		idx := (start + i) % 256
		n, err := tryReserve(idx)
		if err != nil {
			t.Fatalf("reserve test network %d: %v", idx, err)
		}
		if n == nil {
			continue
		}
		t.Cleanup(func() {
			if err := n.remove(); err != nil {
				t.Errorf("clean up network %s: %v", n.Name, err)
			}
		})
		return n
	}
	t.Fatalf("no free test network in %s", subnetBase)
	return nil
}

// tryReserve takes the lock of /24 number idx, or returns nil if another
// process holds it or the host already routes into it.
func tryReserve(idx int) (*Network, error) {
	f, err := os.OpenFile(filepath.Join(lockDir(), fmt.Sprintf("%d.lock", idx)), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, err
	}
	b := subnetBase.Addr().As4()
	b[2] = byte(idx)
	n := &Network{
		Name:   fmt.Sprintf("lgrt%d-%08x", idx, rand.Uint32()),
		Bridge: fmt.Sprintf("lgrt%d", idx),
		Subnet: netip.PrefixFrom(netip.AddrFrom4(b), 24),
		lock:   f,
	}
	used, err := routedOnHost(n.Subnet)
	if err == nil && !used {
		err = n.removeLinks() // a killed run's leftovers: the lock proves no one uses them
	}
	if err != nil || used {
		f.Close()
		return nil, err
	}
	return n, nil
}

// routedOnHost reports whether a host route overlaps p (another network
// than ours already uses those addresses).
func routedOnHost(p netip.Prefix) (bool, error) {
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return false, fmt.Errorf("list host routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		rp, err := netip.ParsePrefix(r.Dst.String())
		if err == nil && rp.Bits() > 0 && rp.Overlaps(p) {
			return true, nil
		}
	}
	return false, nil
}

// HostVeths lists the host veths enslaved to the network's bridge.
func (n *Network) HostVeths() ([]netlink.Link, error) {
	br, err := netlinksafe.LinkByName(n.Bridge)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, err
	}
	var veths []netlink.Link
	for _, l := range links {
		if l.Type() == "veth" && l.Attrs().MasterIndex == br.Attrs().Index {
			veths = append(veths, l)
		}
	}
	return veths, nil
}

// removeLinks deletes the bridge and the host veths enslaved to it (pods of
// this network only: nothing else is ever enslaved to it).
func (n *Network) removeLinks() error {
	veths, err := n.HostVeths()
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range veths {
		if err := netlink.LinkDel(v); err != nil && !errors.As(err, new(netlink.LinkNotFoundError)) {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", v.Attrs().Name, err))
		}
	}
	if br, err := netlinksafe.LinkByName(n.Bridge); err == nil {
		if err := netlink.LinkDel(br); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", n.Bridge, err))
		}
	}
	return errors.Join(errs...)
}

// resultCacheDir is where libcni caches ADD results when the runtime sets no
// cache dir (containerd cannot).
const resultCacheDir = "/var/lib/cni/results"

func (n *Network) remove() error {
	err := n.removeLinks()
	entries, rerr := os.ReadDir(resultCacheDir)
	if rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), n.Name+"-") {
			if rerr := os.Remove(filepath.Join(resultCacheDir, e.Name())); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				err = errors.Join(err, rerr)
			}
		}
	}
	n.lock.Close()
	return err
}
