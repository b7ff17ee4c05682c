package podroute

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A node with the pod's rules and routes among look-alikes that must not be
// recorded: another IP, prefixes containing the IP, a table's default route.
func TestSnapshotRecordsExactlyThePodState(t *testing.T) {
	n := newNode(t)
	n.bridge("br0")
	n.addRule(512, "", "10.77.0.5/32", 254)
	n.addRule(1536, "10.77.0.5/32", "", 100)
	n.addRule(1600, "10.77.0.5/32", "10.0.0.0/8", 101)
	n.addRule(1536, "10.77.0.6/32", "", 100) // another pod
	n.addRule(1700, "10.77.0.5/24", "", 100) // the IP, but not as a host prefix
	n.addRule(1800, "", "10.77.0.4/31", 254) // likewise
	n.addRoute("10.77.0.5/32", "br0", 254)
	n.addRoute("10.77.0.5/32", "br0", 100)
	n.addRoute("10.77.0.0/24", "br0", 254)
	n.addRoute("10.77.0.6/32", "br0", 254)
	n.addRoute("0.0.0.0/0", "br0", 100)

	// CNI addresses carry their subnet; duplicates count once.
	st := n.snapshot("10.77.0.5/24", "10.77.0.5/32")
	equalKeys(t, "rules", ruleKeys(st.Rules), sorted(
		"512 from= to=10.77.0.5/32 table=254 ip=10.77.0.5",
		"1536 from=10.77.0.5/32 to= table=100 ip=10.77.0.5",
		"1600 from=10.77.0.5/32 to=10.0.0.0/8 table=101 ip=10.77.0.5",
	))
	equalKeys(t, "routes", routeKeys(st.Routes), sorted(
		"10.77.0.5/32 dev=br0 table=254 ip=10.77.0.5",
		"10.77.0.5/32 dev=br0 table=100 ip=10.77.0.5",
	))
	for _, r := range st.Routes {
		if r.LinkIndex <= 0 || r.Family != 2 {
			t.Errorf("route recorded without ifindex or family: %+v", r)
		}
	}

	if st := n.snapshot("10.77.0.9/32"); !st.Empty() {
		t.Errorf("an IP nothing refers to got %+v", st)
	}
	// Routes that belong to an address, not to a plugin: a peer address's
	// kernel route and a local address's route in the local table.
	n.do(func() error {
		br, err := netlinksafe.LinkByName("br0")
		if err != nil {
			return err
		}
		peer := &netlink.Addr{IPNet: mustCIDR("10.66.0.1/32"), Peer: mustCIDR("10.77.0.8/32")}
		if err := netlink.AddrAdd(br, peer); err != nil {
			return fmt.Errorf("add peer address: %w", err)
		}
		if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: mustCIDR("10.77.0.9/32")}); err != nil {
			return fmt.Errorf("add address: %w", err)
		}
		local := &netlink.Route{LinkIndex: br.Attrs().Index, Dst: mustCIDR("10.77.0.10/32"),
			Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST}
		return netlink.RouteAdd(local)
	})
	if r := n.liveRoutes("10.77.0.8/32"); len(r) != 1 {
		t.Fatalf("no kernel route to the peer: %q", r)
	}
	if st := n.snapshot("10.77.0.8/32", "10.77.0.9/32", "10.77.0.10/32"); !st.Empty() {
		t.Errorf("address routes recorded: %+v", st)
	}
	var err error
	n.do(func() error { _, err = Snapshot([]string{"10.77.0.5/32", "not-an-ip"}); return nil })
	if err == nil {
		t.Error("an invalid IP was accepted")
	}
}

func TestStateJSON(t *testing.T) {
	zero := 0
	st := State{
		Rules:  []Rule{{PodIP: "10.77.0.5", Family: 2, Priority: 512, Table: 254, Dst: "10.77.0.5/32", SuppressPrefixlen: &zero}},
		Routes: []Route{{PodIP: "10.77.0.5", Family: 2, Table: 254, Dst: "10.77.0.5/32", LinkIndex: 7, LinkName: "eni1", Scope: 253, Protocol: 3}},
	}
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !sameRule(back.Rules[0], st.Rules[0]) || back.Rules[0].PodIP != "10.77.0.5" || !sameRoute(back.Routes[0], st.Routes[0]) {
		t.Errorf("round trip changed the state: %s -> %+v", raw, back)
	}
	if one := 1; sameRule(Rule{SuppressPrefixlen: &zero}, Rule{}) || sameRule(Rule{SuppressPrefixlen: &zero}, Rule{SuppressPrefixlen: &one}) {
		t.Error("suppress_prefixlength 0 must differ from unset and from 1")
	}
}
