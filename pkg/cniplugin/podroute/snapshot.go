package podroute

import (
	"fmt"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Snapshot records, in the current netns, the routing state that references
// the given pod IPs: every ip rule whose source or destination selector is
// exactly a pod IP as a host prefix (/32, /128), and every route whose
// destination is that host prefix, in any table. ips are addresses as CNI
// results carry them ("10.77.0.5/32", "10.88.0.2/24": only the address counts).
//
// Left out on purpose: routes the kernel derives from addresses (protocol
// kernel; types local, broadcast, anycast, multicast) — they belong to an
// address, not to the pod's plugin — and multipath routes, which cannot be
// matched exactly.
func Snapshot(ips []string) (State, error) {
	addrs, err := podAddrs(ips)
	if err != nil {
		return State{}, err
	}
	var st State
	for _, family := range families(addrs) {
		rules, err := listRules(family)
		if err != nil {
			return State{}, err
		}
		routes, err := listRoutes(family)
		if err != nil {
			return State{}, err
		}
		links := linkNames{}
		for _, a := range addrs {
			if familyOf(a) != family {
				continue
			}
			st.Rules = append(st.Rules, rulesFor(a, rules)...)
			for _, nr := range routesFor(a, routes) {
				r := routeFromNetlink(nr, links.name(nr.LinkIndex))
				r.PodIP = a.String()
				st.Routes = append(st.Routes, r)
			}
		}
	}
	return st, nil
}

// rulesFor picks the rules selecting a by source or destination.
func rulesFor(a netip.Addr, rules []netlink.Rule) []Rule {
	var out []Rule
	for _, nr := range rules {
		src, srcOK := hostAddr(nr.Src)
		dst, dstOK := hostAddr(nr.Dst)
		if srcOK && src == a || dstOK && dst == a {
			r := ruleFromNetlink(nr)
			r.PodIP = a.String()
			out = append(out, r)
		}
	}
	return out
}

// routesFor picks the plugin-made routes to a's host prefix.
func routesFor(a netip.Addr, routes []netlink.Route) []netlink.Route {
	var out []netlink.Route
	for _, nr := range routes {
		if dst, ok := hostAddr(nr.Dst); !ok || dst != a {
			continue
		}
		if len(nr.MultiPath) > 0 || nr.Protocol == unix.RTPROT_KERNEL {
			continue
		}
		switch nr.Type {
		case unix.RTN_LOCAL, unix.RTN_BROADCAST, unix.RTN_ANYCAST, unix.RTN_MULTICAST:
			continue
		}
		out = append(out, nr)
	}
	return out
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func families(addrs []netip.Addr) []int {
	var v4, v6 bool
	for _, a := range addrs {
		v4 = v4 || a.Is4()
		v6 = v6 || !a.Is4()
	}
	var out []int
	if v4 {
		out = append(out, netlink.FAMILY_V4)
	}
	if v6 {
		out = append(out, netlink.FAMILY_V6)
	}
	return out
}

func listRules(family int) ([]netlink.Rule, error) {
	rules, err := netlinksafe.RuleList(family)
	if err != nil {
		return nil, fmt.Errorf("failed to list ip rules (family %d): %w", family, err)
	}
	return rules, nil
}

// listRoutes dumps the routes of every table.
func listRoutes(family int) ([]netlink.Route, error) {
	routes, err := netlinksafe.RouteListFiltered(family,
		&netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("failed to list routes (family %d): %w", family, err)
	}
	return routes, nil
}

// linkNames caches ifindex -> name lookups; "" when the link is gone.
type linkNames map[int]string

func (l linkNames) name(index int) string {
	if index == 0 {
		return ""
	}
	name, ok := l[index]
	if !ok {
		// A lookup by index is a single request, not a dump.
		if link, err := netlink.LinkByIndex(index); err == nil {
			name = link.Attrs().Name
		}
		l[index] = name
	}
	return name
}
