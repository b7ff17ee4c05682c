package podlink

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// Discovery is what an attachment owns, found from inside its netns.
type Discovery struct {
	Container []ContainerIface
	Host      []Identity
	// Skipped explains every interface that yielded no host link.
	Skipped []string
}

// Discover enters podNS, reads each named container interface and, for a
// veth, its peer ifindex; then, back in the host netns, it looks that ifindex
// up and keeps it only if it is a veth whose peer is in podNS at exactly that
// interface. It relies on no name and no "empty sandbox" entry of a result.
// must names the interfaces that have to exist (CNI_IFNAME); the others are
// skipped with a reason when absent. classify, run inside the pod netns,
// tells devices moved into the pod (with their host name) from virtual ones;
// nil treats every interface as virtual.
func Discover(podNS ns.NetNS, must string, names []string, classify func(netlink.Link) (moved bool, hostName string)) (*Discovery, error) {
	d := &Discovery{}
	type peer struct {
		c     ContainerIface
		index int
	}
	var peers []peer
	err := podNS.Do(func(ns.NetNS) error {
		for _, name := range names {
			l, err := netlinksafe.LinkByName(name)
			if err != nil {
				if name == must {
					return fmt.Errorf("look up container interface %q: %w", name, err)
				}
				d.Skipped = append(d.Skipped, fmt.Sprintf("%s: not found in netns: %v", name, err))
				continue
			}
			c := ContainerIdentity(l)
			if classify != nil {
				c.Moved, c.HostName = classify(l)
			}
			d.Container = append(d.Container, c)
			v, ok := l.(*netlink.Veth)
			if !ok {
				d.Skipped = append(d.Skipped, fmt.Sprintf("%s: kind %s has no host peer", name, l.Type()))
				continue
			}
			// IFLA_LINK of a veth is its peer's ifindex (in the peer's netns);
			// ethtool is asked only when the kernel did not report it.
			idx := l.Attrs().ParentIndex
			if idx <= 0 {
				if idx, err = netlink.VethPeerIndex(v); err != nil {
					return fmt.Errorf("read peer ifindex of %q: %w", name, err)
				}
			}
			peers = append(peers, peer{c, idx})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(peers) == 0 {
		return d, nil
	}
	nsid, err := netlink.GetNetNsIdByFd(int(podNS.Fd()))
	if err != nil {
		return nil, fmt.Errorf("get the host's nsid for %s: %w", podNS.Path(), err)
	}
	for _, p := range peers {
		id, why := hostPeer(p.c, p.index, nsid)
		if why != "" {
			d.Skipped = append(d.Skipped, why)
			continue
		}
		d.Host = append(d.Host, id)
	}
	return d, nil
}

// hostPeer resolves the host end of container veth c, or says why not.
func hostPeer(c ContainerIface, peerIndex, podNSID int) (Identity, string) {
	l, err := netlink.LinkByIndex(peerIndex)
	if err != nil {
		return Identity{}, fmt.Sprintf("%s: peer ifindex %d not found on the host: %v", c.Name, peerIndex, err)
	}
	id := HostIdentity(l)
	switch {
	case id.Kind != "veth":
		return Identity{}, fmt.Sprintf("%s: host ifindex %d is a %s, not its veth peer", c.Name, peerIndex, id.Kind)
	case id.NetNSID < 0 || podNSID < 0 || id.NetNSID != podNSID:
		return Identity{}, fmt.Sprintf("%s: host ifindex %d (%s) has its peer in netns id %d, not the pod's (%d); its peer is elsewhere", c.Name, peerIndex, id.Name, id.NetNSID, podNSID)
	case id.PeerIndex != c.Index:
		return Identity{}, fmt.Sprintf("%s: host ifindex %d (%s) pairs with ifindex %d, not %d", c.Name, peerIndex, id.Name, id.PeerIndex, c.Index)
	}
	id.PeerName = c.Name
	return id, ""
}
