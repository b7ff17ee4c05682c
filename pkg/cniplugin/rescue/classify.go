package rescue

import "github.com/vishvananda/netlink"

// Classify says whether a container interface is a moved device, which must
// go back to the host at rescue, or a virtual one created for the pod (veth,
// macvlan, macvtap, ipvlan, ipvtap, vlan, vxlan, bridge, tun/tap, dummy, ifb,
// ...), which is deleted. Only a kind-less device (netlink reports "device":
// a real NIC, an ENI, an SR-IOV VF) is moved: any device with a kind was
// created through rtnetlink, possibly inside the pod, and must never be
// pushed onto the host; the kernel itself destroys such devices with their
// netns, while it returns kind-less ones to the initial netns.
// It returns whether the device is a moved one and, if so, its name on the
// host: its alias when set (the host-device convention: the host name is
// saved there on the way in), else its current name.
func Classify(l netlink.Link) (bool, string) {
	if l.Type() != "device" {
		return false, ""
	}
	a := l.Attrs()
	if a.Alias != "" {
		return true, a.Alias
	}
	return true, a.Name
}
