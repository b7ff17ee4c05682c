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
// hostName is the device's name on the host: its alias when set (the
// host-device convention: the host name is saved there on the way in), else
// its current name.
func Classify(l netlink.Link) (moved bool, hostName string) {
	return classify(l, nil)
}

// ClassifierWith returns Classify that also treats the given kinds as moved
// devices. It exists for tests on kernels and machines without a spare
// physical NIC (an ifb device stands in for an ENI there); production code
// uses Classify.
func ClassifierWith(standIns ...string) func(netlink.Link) (bool, string) {
	extra := map[string]bool{}
	for _, k := range standIns {
		extra[k] = true
	}
	return func(l netlink.Link) (bool, string) { return classify(l, extra) }
}

func classify(l netlink.Link, extra map[string]bool) (bool, string) {
	if l.Type() != "device" && !extra[l.Type()] {
		return false, ""
	}
	a := l.Attrs()
	if a.Alias != "" {
		return true, a.Alias
	}
	return true, a.Name
}
