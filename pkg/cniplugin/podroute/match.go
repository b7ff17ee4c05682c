package podroute

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// podAddrs parses CNI result addresses ("10.77.0.5/32", "10.88.0.2/24" or a
// bare IP) into the pod IPs they carry, skipping duplicates.
func podAddrs(ips []string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, s := range ips {
		a, err := parseAddr(s)
		if err != nil {
			return nil, err
		}
		if !seen[a] {
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}

func parseAddr(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("invalid pod IP %q", s)
	}
	return a.Unmap(), nil
}

// hostAddr returns the address of n when n is a host prefix (/32 or /128).
func hostAddr(n *net.IPNet) (netip.Addr, bool) {
	if n == nil {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits == 0 || ones != bits || ones != a.BitLen() {
		return netip.Addr{}, false
	}
	return a, true
}

func ipNetString(n *net.IPNet) string {
	if n == nil {
		return ""
	}
	return n.String()
}

func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

// ruleFromNetlink converts a dumped rule, keeping every attribute the
// kernel reported.
func ruleFromNetlink(nr netlink.Rule) Rule {
	r := Rule{
		Family:   nr.Family,
		Priority: nr.Priority,
		Table:    nr.Table,
		Src:      ipNetString(nr.Src),
		Dst:      ipNetString(nr.Dst),
		IifName:  nr.IifName,
		OifName:  nr.OifName,
		Mark:     nr.Mark,
		Invert:   nr.Invert,
		Tos:      nr.Tos,
		TunID:    nr.TunID,
		IPProto:  nr.IPProto,
		Protocol: nr.Protocol,
	}
	if nr.Mask != nil {
		r.Mask = *nr.Mask
	}
	if nr.Goto > 0 {
		r.Goto = nr.Goto
	}
	if nr.Flow > 0 {
		r.Flow = nr.Flow
	}
	if nr.Sport != nil {
		r.Sport = fmt.Sprintf("%d-%d", nr.Sport.Start, nr.Sport.End)
	}
	if nr.Dport != nil {
		r.Dport = fmt.Sprintf("%d-%d", nr.Dport.Start, nr.Dport.End)
	}
	if nr.UIDRange != nil {
		r.UIDRange = fmt.Sprintf("%d-%d", nr.UIDRange.Start, nr.UIDRange.End)
	}
	if nr.SuppressPrefixlen >= 0 {
		v := nr.SuppressPrefixlen
		r.SuppressPrefixlen = &v
	}
	if nr.SuppressIfgroup >= 0 {
		v := nr.SuppressIfgroup
		r.SuppressIfgroup = &v
	}
	return r
}

// toNetlink builds the deletion request: every recorded attribute is sent,
// so the kernel only matches the rule that was verified to exist.
func (r Rule) toNetlink() (*netlink.Rule, error) {
	nr := netlink.NewRule()
	nr.Family = r.Family
	nr.Priority = r.Priority
	nr.Table = r.Table
	nr.IifName = r.IifName
	nr.OifName = r.OifName
	nr.Mark = r.Mark
	if r.Mask != 0 || r.Mark != 0 {
		mask := r.Mask
		nr.Mask = &mask
	}
	nr.Invert = r.Invert
	nr.Tos = r.Tos
	nr.TunID = r.TunID
	nr.IPProto = r.IPProto
	nr.Protocol = r.Protocol
	if r.Goto > 0 {
		nr.Goto = r.Goto
	}
	if r.Flow > 0 {
		nr.Flow = r.Flow
	}
	if r.SuppressPrefixlen != nil {
		nr.SuppressPrefixlen = *r.SuppressPrefixlen
	}
	if r.SuppressIfgroup != nil {
		nr.SuppressIfgroup = *r.SuppressIfgroup
	}
	var err error
	if nr.Src, err = parseCIDR(r.Src); err != nil {
		return nil, err
	}
	if nr.Dst, err = parseCIDR(r.Dst); err != nil {
		return nil, err
	}
	if r.Sport != "" {
		lo, hi, err := parseRange(r.Sport, 16)
		if err != nil {
			return nil, err
		}
		nr.Sport = netlink.NewRulePortRange(uint16(lo), uint16(hi))
	}
	if r.Dport != "" {
		lo, hi, err := parseRange(r.Dport, 16)
		if err != nil {
			return nil, err
		}
		nr.Dport = netlink.NewRulePortRange(uint16(lo), uint16(hi))
	}
	if r.UIDRange != "" {
		lo, hi, err := parseRange(r.UIDRange, 32)
		if err != nil {
			return nil, err
		}
		nr.UIDRange = netlink.NewRuleUIDRange(uint32(lo), uint32(hi))
	}
	return nr, nil
}

// sameRule compares every kernel attribute; PodIP is bookkeeping.
func sameRule(a, b Rule) bool {
	if !sameIntPtr(a.SuppressPrefixlen, b.SuppressPrefixlen) || !sameIntPtr(a.SuppressIfgroup, b.SuppressIfgroup) {
		return false
	}
	a.PodIP, b.PodIP = "", ""
	a.SuppressPrefixlen, b.SuppressPrefixlen = nil, nil
	a.SuppressIfgroup, b.SuppressIfgroup = nil, nil
	return a == b
}

func sameIntPtr(a, b *int) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// routeFromNetlink converts a dumped route; linkName is the name of its
// device now.
func routeFromNetlink(nr netlink.Route, linkName string) Route {
	return Route{
		Family:    nr.Family,
		Table:     nr.Table,
		Dst:       ipNetString(nr.Dst),
		LinkIndex: nr.LinkIndex,
		LinkName:  linkName,
		Gw:        ipString(nr.Gw),
		Src:       ipString(nr.Src),
		Scope:     int(nr.Scope),
		Protocol:  int(nr.Protocol),
		Priority:  nr.Priority,
		Type:      nr.Type,
		Tos:       nr.Tos,
	}
}

// toNetlink builds the deletion request with the device, gateway, metric,
// type and protocol pinned, so no other route to the same prefix matches.
func (r Route) toNetlink() (*netlink.Route, error) {
	dst, err := parseCIDR(r.Dst)
	if err != nil {
		return nil, err
	}
	if dst == nil {
		return nil, fmt.Errorf("route without destination")
	}
	nr := &netlink.Route{
		Family:    r.Family,
		Table:     r.Table,
		Dst:       dst,
		LinkIndex: r.LinkIndex,
		Scope:     netlink.Scope(r.Scope),
		Protocol:  netlink.RouteProtocol(r.Protocol),
		Priority:  r.Priority,
		Type:      r.Type,
		Tos:       r.Tos,
	}
	if r.Gw != "" {
		if nr.Gw = net.ParseIP(r.Gw); nr.Gw == nil {
			return nil, fmt.Errorf("invalid gateway %q", r.Gw)
		}
	}
	if r.Src != "" {
		if nr.Src = net.ParseIP(r.Src); nr.Src == nil {
			return nil, fmt.Errorf("invalid source %q", r.Src)
		}
	}
	return nr, nil
}

func sameRoute(a, b Route) bool {
	a.PodIP, b.PodIP = "", ""
	return a == b
}

func parseCIDR(s string) (*net.IPNet, error) {
	if s == "" {
		return nil, nil
	}
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("invalid prefix %q: %w", s, err)
	}
	n.IP = ip
	if v4 := ip.To4(); v4 != nil {
		n.IP = v4
	}
	return n, nil
}

// parseRange parses "lo-hi".
func parseRange(s string, bits int) (uint64, uint64, error) {
	var lo, hi uint64
	var err error
	a, b, ok := strings.Cut(s, "-")
	if ok {
		if lo, err = strconv.ParseUint(a, 10, bits); err == nil {
			hi, err = strconv.ParseUint(b, 10, bits)
		}
	}
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("invalid range %q", s)
	}
	return lo, hi, nil
}
