package guard_test

import (
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/test/nsutil"
)

const podIP = "10.99.0.7"

// tkeRouting adds what a tke-eni-style plugin sets up on the host for the
// pod: a /32 route via the host veth, "to podIP lookup main" at 512 and
// "from podIP lookup 100" at 1536.
func (f *fixture) tkeRouting() {
	f.t.Helper()
	inNS(f.t, f.node, func() error {
		l, err := netlink.LinkByIndex(f.hostVeth.Index)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		dst := &net.IPNet{IP: net.ParseIP(podIP).To4(), Mask: net.CIDRMask(32, 32)}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil && err != unix.EEXIST {
			return err
		}
		to := netlink.NewRule()
		to.Dst, to.Priority, to.Table = dst, 512, unix.RT_TABLE_MAIN
		from := netlink.NewRule()
		from.Src, from.Priority, from.Table = dst, 1536, 100
		if err := netlink.RuleAdd(to); err != nil {
			return err
		}
		return netlink.RuleAdd(from)
	})
}

func (f *fixture) podRules() []netlink.Rule {
	f.t.Helper()
	var out []netlink.Rule
	inNS(f.t, f.node, func() error {
		rules, err := netlinksafe.RuleList(netlink.FAMILY_V4)
		for _, r := range rules {
			if (r.Src != nil && r.Src.IP.String() == podIP) || (r.Dst != nil && r.Dst.IP.String() == podIP) {
				out = append(out, r)
			}
		}
		return err
	})
	return out
}

func (f *fixture) podRoutes() []netlink.Route {
	f.t.Helper()
	var out []netlink.Route
	inNS(f.t, f.node, func() error {
		routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		for _, r := range routes {
			if r.Dst != nil && r.Dst.IP.String() == podIP {
				out = append(out, r)
			}
		}
		return err
	})
	return out
}

// Through the leak, the pod's ip rules and /32 route go too (the route with
// its device, the rules by the recorded routing state).
func TestLeakReapsPodIPRulesAndRoutes(t *testing.T) {
	f := newFixture(t)
	f.tkeRouting()
	f.add("1.0.0")
	if r := f.loadRecord(); len(r.Routing.Rules) != 2 || len(r.Routing.Routes) != 1 {
		t.Fatalf("record should hold 2 rules and 1 route, got %+v", r.Routing)
	}
	nsutil.LeakBySocket(t, f.pod)
	if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
		t.Fatal(err)
	}
	if rules := f.podRules(); len(rules) != 0 {
		t.Fatalf("pod rules should be gone: %v", rules)
	}
	if routes := f.podRoutes(); len(routes) != 0 {
		t.Fatalf("pod routes should be gone: %v", routes)
	}
}

// A second live attachment claiming the same IP keeps the rules.
func TestLeakKeepsRulesOfIPClaimedByLiveAttachment(t *testing.T) {
	f := newFixture(t)
	f.tkeRouting()
	f.add("1.0.0")
	g := f.sibling() // same prevResult IP 10.99.0.7
	g.add("1.0.0")
	nsutil.LeakBySocket(t, f.pod)
	if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
		t.Fatal(err)
	}
	f.mustBeGone(f.hostVeth.Name)
	if rules := f.podRules(); len(rules) != 2 {
		t.Fatalf("rules of an IP claimed by a live attachment must stay, got %v", rules)
	}
}
