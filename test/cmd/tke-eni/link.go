package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var defaultDst = &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}

// setupPodSide creates the veth pair from inside the pod netns and gives the
// pod its address and a default route via the link-local gateway, answered
// by a permanent neighbour entry for the host veth (as tke-eni-cni does). It
// returns the host end, then the pod end.
func setupPodSide(netns, hostNS ns.NetNS, ifName string, conf *podConf) (net.Interface, net.Interface, error) {
	var hostIf, contIf net.Interface
	created := false
	err := netns.Do(func(ns.NetNS) error {
		var link netlink.Link
		var err error
		link, hostIf, err = makeVeth(ifName, conf.hostVeth, conf.MTU, hostNS)
		if err != nil {
			return err
		}
		created = true
		contIf = net.Interface{Index: link.Attrs().Index, Name: ifName, HardwareAddr: link.Attrs().HardwareAddr}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("failed to set %q up: %w", ifName, err)
		}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: conf.addr}); err != nil {
			return fmt.Errorf("failed to add %s to %q: %w", conf.addr, ifName, err)
		}
		neigh := &netlink.Neigh{
			LinkIndex:    link.Attrs().Index,
			Family:       netlink.FAMILY_V4,
			State:        netlink.NUD_PERMANENT,
			IP:           conf.gateway,
			HardwareAddr: hostIf.HardwareAddr,
		}
		if err := netlink.NeighSet(neigh); err != nil {
			return fmt.Errorf("failed to add neighbour %s on %q: %w", conf.gateway, ifName, err)
		}
		route := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       defaultDst,
			Gw:        conf.gateway,
			Flags:     int(netlink.FLAG_ONLINK),
		}
		if err := netlink.RouteAdd(route); err != nil {
			return fmt.Errorf("failed to add default route via %s on %q: %w", conf.gateway, ifName, err)
		}
		return nil
	})
	if err != nil && created {
		// The host end follows the pod end when it goes.
		_ = netns.Do(func(ns.NetNS) error { return deleteLinkByName(ifName) })
	}
	return hostIf, contIf, err
}

// makeVeth is called inside the pod netns: it creates the pair with the host
// end directly in hostNS (like pkg/ip's SetupVethWithName, which we do not
// import to keep its iptables/nftables dependencies out of the module) and
// sets the host end up.
func makeVeth(ifName, hostName string, mtu int, hostNS ns.NetNS) (netlink.Link, net.Interface, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ifName
	attrs.MTU = mtu
	veth := &netlink.Veth{
		LinkAttrs:     attrs,
		PeerName:      hostName,
		PeerNamespace: netlink.NsFd(int(hostNS.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, net.Interface{}, fmt.Errorf("failed to create veth %q (host end %q): %w", ifName, hostName, err)
	}
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		_ = netlink.LinkDel(veth)
		return nil, net.Interface{}, fmt.Errorf("failed to look up %q: %w", ifName, err)
	}
	var hostIf net.Interface
	err = hostNS.Do(func(ns.NetNS) error {
		host, err := netlinksafe.LinkByName(hostName)
		if err != nil {
			return fmt.Errorf("failed to look up host veth %q: %w", hostName, err)
		}
		if err := netlink.LinkSetUp(host); err != nil {
			return fmt.Errorf("failed to set host veth %q up: %w", hostName, err)
		}
		hostIf = net.Interface{Index: host.Attrs().Index, Name: hostName, HardwareAddr: host.Attrs().HardwareAddr}
		return nil
	})
	if err != nil {
		_ = netlink.LinkDel(link)
		return nil, net.Interface{}, err
	}
	return link, hostIf, nil
}

// setupHostSide adds, in the host netns, the /32 route to the pod via its
// host veth, the to-pod and from-pod rules and the per-ENI table's default route.
func setupHostSide(conf *podConf) error {
	veth, err := netlinksafe.LinkByName(conf.hostVeth)
	if err != nil {
		return fmt.Errorf("failed to look up host veth %q: %w", conf.hostVeth, err)
	}
	podRoute := &netlink.Route{
		LinkIndex: veth.Attrs().Index,
		Dst:       conf.podHostNet(),
		Scope:     netlink.SCOPE_LINK,
	}
	if err := netlink.RouteReplace(podRoute); err != nil {
		return fmt.Errorf("failed to add route to %s via %q: %w", conf.addr.IP, conf.hostVeth, err)
	}

	out := veth
	if conf.ENILink != "" {
		if out, err = netlinksafe.LinkByName(conf.ENILink); err != nil {
			return fmt.Errorf("failed to look up ENI link %q: %w", conf.ENILink, err)
		}
	}
	tableRoute := &netlink.Route{
		LinkIndex: out.Attrs().Index,
		Dst:       defaultDst,
		Scope:     netlink.SCOPE_LINK,
		Table:     conf.Table,
	}
	if err := netlink.RouteReplace(tableRoute); err != nil {
		return fmt.Errorf("failed to add default route via %q in table %d: %w", out.Attrs().Name, conf.Table, err)
	}

	for _, rule := range podRules(conf) {
		// An identical rule left by a leaked earlier sandbox of the same IP
		// is the state we want: keep it.
		if err := netlink.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("failed to add %s: %w", rule, err)
		}
	}
	return nil
}

// podRules are `to <podIP> lookup main` and `from <podIP> lookup <table>`.
func podRules(conf *podConf) []*netlink.Rule {
	toPod := netlink.NewRule()
	toPod.Family = netlink.FAMILY_V4
	toPod.Dst = conf.podHostNet()
	toPod.Table = unix.RT_TABLE_MAIN
	toPod.Priority = conf.ToPodPriority

	fromPod := netlink.NewRule()
	fromPod.Family = netlink.FAMILY_V4
	fromPod.Src = conf.podHostNet()
	fromPod.Table = conf.Table
	fromPod.Priority = conf.FromPodPriority
	return []*netlink.Rule{toPod, fromPod}
}

func deleteRules(conf *podConf) error {
	var errs []error
	for _, rule := range podRules(conf) {
		if err := netlink.RuleDel(rule); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("failed to delete %s: %w", rule, err))
		}
	}
	return errors.Join(errs...)
}

func checkPodSide(ifName string, conf *podConf) error {
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("pod interface %q: %w", ifName, err)
	}
	if _, ok := link.(*netlink.Veth); !ok {
		return fmt.Errorf("pod interface %q is a %s, not a veth", ifName, link.Type())
	}
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("failed to list addresses of %q: %w", ifName, err)
	}
	for _, a := range addrs {
		if a.IPNet.String() == conf.addr.String() {
			return nil
		}
	}
	return fmt.Errorf("pod interface %q lacks address %s", ifName, conf.addr)
}

func checkHostSide(conf *podConf) error {
	veth, err := netlinksafe.LinkByName(conf.hostVeth)
	if err != nil {
		return fmt.Errorf("host veth %q: %w", conf.hostVeth, err)
	}
	if _, ok := veth.(*netlink.Veth); !ok {
		return fmt.Errorf("host link %q is a %s, not a veth", conf.hostVeth, veth.Type())
	}
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Dst: conf.podHostNet(), LinkIndex: veth.Attrs().Index},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_OIF)
	if err != nil {
		return fmt.Errorf("failed to list routes to %s: %w", conf.addr.IP, err)
	}
	if len(routes) == 0 {
		return fmt.Errorf("no route to %s via %q", conf.addr.IP, conf.hostVeth)
	}
	rules, err := netlinksafe.RuleList(netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("failed to list rules: %w", err)
	}
	for _, want := range podRules(conf) {
		if !hasRule(rules, want) {
			return fmt.Errorf("missing %s", want)
		}
	}
	return nil
}

func hasRule(rules []netlink.Rule, want *netlink.Rule) bool {
	for _, r := range rules {
		if r.Priority == want.Priority && r.Table == want.Table &&
			r.Src.String() == want.Src.String() && r.Dst.String() == want.Dst.String() {
			return true
		}
	}
	return false
}
