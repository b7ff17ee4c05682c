package rescue

import "github.com/vishvananda/netlink"

// movedKinds are link kinds treated as devices that exist on their own and
// were moved into the pod. A real NIC, ENI or SR-IOV VF has no
// IFLA_INFO_KIND at all (netlink reports "device"); dummy and ifb are
// accepted as stand-ins for an ENI in tests (this kernel has no dummy, so the
// tests use ifb).
var movedKinds = map[string]bool{
	"device": true,
	"dummy":  true,
	"ifb":    true,
}

// Classify says whether a container interface is a moved device, which must
// go back to the host at rescue, or a virtual one created for the pod (veth,
// macvlan, macvtap, ipvlan, ipvtap, vlan, vxlan, bridge, tun/tap, ...), which
// is deleted. Any kind not listed in movedKinds is virtual: it was created
// through rtnetlink for this pod, and the kernel itself destroys such devices
// with their netns, while it returns kind-less devices to the initial netns.
// hostName is the device's name on the host: its alias when set (the
// host-device convention: the host name is saved there on the way in), else
// its current name.
func Classify(l netlink.Link) (moved bool, hostName string) {
	if !movedKinds[l.Type()] {
		return false, ""
	}
	a := l.Attrs()
	if a.Alias != "" {
		return true, a.Alias
	}
	return true, a.Name
}
