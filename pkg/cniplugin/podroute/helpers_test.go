package podroute

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/test/nsutil"
)

// node is a throw-away netns playing the host.
type node struct {
	t  *testing.T
	ns ns.NetNS
}

func newNode(t *testing.T) *node {
	t.Helper()
	return &node{t: t, ns: nsutil.NewNS(t)}
}

// do runs f inside the node netns and fails the test on error.
func (n *node) do(f func() error) {
	n.t.Helper()
	if err := n.ns.Do(func(ns.NetNS) error { return f() }); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) snapshot(ips ...string) State {
	n.t.Helper()
	var st State
	n.do(func() error {
		var err error
		st, err = Snapshot(ips)
		return err
	})
	return st
}

func (n *node) reap(st State, claimed func(string) bool) (Report, error) {
	n.t.Helper()
	var rep Report
	var rerr error
	n.do(func() error { rep, rerr = Reap(st, claimed); return nil })
	return rep, rerr
}

// bridge creates an up bridge: a device routes can point at.
func (n *node) bridge(name string) {
	n.t.Helper()
	n.do(func() error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		br := &netlink.Bridge{LinkAttrs: attrs}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge %s: %w", name, err)
		}
		return netlink.LinkSetUp(br)
	})
}

func (n *node) delLink(name string) {
	n.t.Helper()
	n.do(func() error {
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			return fmt.Errorf("look up %s: %w", name, err)
		}
		return netlink.LinkDel(l)
	})
}

func mustCIDR(s string) *net.IPNet {
	if s == "" {
		return nil
	}
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func nlRule(prio int, src, dst string, table int) *netlink.Rule {
	r := netlink.NewRule()
	r.Priority = prio
	r.Src = mustCIDR(src)
	r.Dst = mustCIDR(dst)
	r.Table = table
	r.Family = netlink.FAMILY_V4
	if strings.Contains(src+dst, ":") {
		r.Family = netlink.FAMILY_V6
	}
	return r
}

func (n *node) addRule(prio int, src, dst string, table int) {
	n.t.Helper()
	n.do(func() error {
		if err := netlink.RuleAdd(nlRule(prio, src, dst, table)); err != nil {
			return fmt.Errorf("add rule %d from %q to %q table %d: %w", prio, src, dst, table, err)
		}
		return nil
	})
}

func (n *node) delRule(prio int, src, dst string, table int) {
	n.t.Helper()
	n.do(func() error { return netlink.RuleDel(nlRule(prio, src, dst, table)) })
}

func (n *node) addRoute(dst, dev string, table int) {
	n.t.Helper()
	n.do(func() error {
		l, err := netlinksafe.LinkByName(dev)
		if err != nil {
			return err
		}
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: mustCIDR(dst), Table: table, Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("add route %s dev %s table %d: %w", dst, dev, table, err)
		}
		return nil
	})
}

// ruleKeys / routeKeys render objects compactly for set comparisons.
func ruleKeys(rules []Rule) []string {
	var out []string
	for _, r := range rules {
		out = append(out, fmt.Sprintf("%d from=%s to=%s table=%d ip=%s", r.Priority, r.Src, r.Dst, r.Table, r.PodIP))
	}
	sort.Strings(out)
	return out
}

func routeKeys(routes []Route) []string {
	var out []string
	for _, r := range routes {
		out = append(out, fmt.Sprintf("%s dev=%s table=%d ip=%s", r.Dst, r.LinkName, r.Table, r.PodIP))
	}
	sort.Strings(out)
	return out
}

func sorted(s ...string) []string {
	sort.Strings(s)
	return s
}

func equalKeys(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// liveRules lists the node's rules of both families as keys (without PodIP).
func (n *node) liveRules() []string {
	n.t.Helper()
	var out []string
	n.do(func() error {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			rules, err := netlinksafe.RuleList(fam)
			if err != nil {
				return err
			}
			for _, r := range rules {
				out = append(out, ruleKeys([]Rule{ruleFromNetlink(r)})...)
			}
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// liveRoutes lists the node's routes of every table to dst.
func (n *node) liveRoutes(dst string) []string {
	n.t.Helper()
	var out []string
	n.do(func() error {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			routes, err := listRoutes(fam)
			if err != nil {
				return err
			}
			links := linkNames{}
			for _, r := range routes {
				if ipNetString(r.Dst) == dst {
					out = append(out, routeKeys([]Route{routeFromNetlink(r, links.name(r.LinkIndex))})...)
				}
			}
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func containsSub(list []string, sub ...string) bool {
	for _, x := range list {
		ok := true
		for _, s := range sub {
			ok = ok && strings.Contains(x, s)
		}
		if ok {
			return true
		}
	}
	return false
}
