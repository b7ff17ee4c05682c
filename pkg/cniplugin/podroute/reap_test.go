package podroute

import (
	"encoding/json"
	"strconv"
	"testing"
)

// roundTrip stores the state the way a record does.
func roundTrip(t *testing.T, st State) State {
	t.Helper()
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	return back
}

func TestReapDeletesOnlyUnchangedUnclaimed(t *testing.T) {
	n := newNode(t)
	n.bridge("br0")
	n.addRule(512, "", "10.77.0.5/32", 254)
	n.addRule(1536, "10.77.0.5/32", "", 100)
	n.addRule(1600, "10.77.0.5/32", "10.0.0.0/8", 101)
	n.addRoute("10.77.0.5/32", "br0", 254)
	n.addRule(512, "", "10.77.0.7/32", 254) // .7 is claimed by a live attachment
	n.addRule(1536, "10.77.0.7/32", "", 100)
	n.addRoute("10.77.0.7/32", "br0", 254)
	n.addRule(1536, "10.77.0.6/32", "", 100) // not recorded
	n.addRoute("10.77.0.0/24", "br0", 254)

	st := roundTrip(t, n.snapshot("10.77.0.5/32", "10.77.0.7/32"))
	if len(st.Rules) != 5 || len(st.Routes) != 2 {
		t.Fatalf("snapshot: %d rules, %d routes: %+v", len(st.Rules), len(st.Routes), st)
	}
	// Changed since ADD: same selector, another table; another priority.
	n.delRule(1536, "10.77.0.5/32", "", 100)
	n.addRule(1536, "10.77.0.5/32", "", 102)
	n.delRule(1600, "10.77.0.5/32", "10.0.0.0/8", 101)
	n.addRule(1601, "10.77.0.5/32", "10.0.0.0/8", 101)

	claimed := func(ip string) bool { return ip == "10.77.0.7" }
	rep, err := n.reap(st, claimed)
	if err != nil {
		t.Fatalf("reap: %v (%+v)", err, rep)
	}
	equalKeys(t, "deleted", sorted(rep.Deleted...), sorted(
		"rule 512: to 10.77.0.5/32 lookup 254",
		"route 10.77.0.5/32 dev br0 (ifindex "+strconv.Itoa(st.Routes[0].LinkIndex)+") table 254",
	))
	if len(rep.Gone) != 0 || len(rep.Kept) != 5 {
		t.Errorf("gone %q kept %q", rep.Gone, rep.Kept)
	}
	for _, want := range [][]string{
		{"rule 1536: from 10.77.0.5/32 lookup 100", "changed", "lookup 102"},
		{"rule 1600: from 10.77.0.5/32 to 10.0.0.0/8", "changed", "rule 1601"},
		{"rule 512: to 10.77.0.7/32", "claimed"},
		{"rule 1536: from 10.77.0.7/32", "claimed"},
		{"route 10.77.0.7/32", "claimed"},
	} {
		if !containsSub(rep.Kept, want...) {
			t.Errorf("kept %q lacks %q", rep.Kept, want)
		}
	}

	live := n.liveRules()
	for _, gone := range []string{"512 from= to=10.77.0.5/32 table=254 ip="} {
		if contains(live, gone) {
			t.Errorf("rule %q survived", gone)
		}
	}
	for _, kept := range []string{
		"1536 from=10.77.0.5/32 to= table=102 ip=",
		"1601 from=10.77.0.5/32 to=10.0.0.0/8 table=101 ip=",
		"512 from= to=10.77.0.7/32 table=254 ip=",
		"1536 from=10.77.0.7/32 to= table=100 ip=",
		"1536 from=10.77.0.6/32 to= table=100 ip=",
	} {
		if !contains(live, kept) {
			t.Errorf("rule %q was deleted; live %q", kept, live)
		}
	}
	if r := n.liveRoutes("10.77.0.5/32"); len(r) != 0 {
		t.Errorf("route to the pod survived: %q", r)
	}
	if len(n.liveRoutes("10.77.0.7/32")) != 1 || len(n.liveRoutes("10.77.0.0/24")) != 1 {
		t.Error("a claimed or unrecorded route was deleted")
	}

	// Idempotent: the second run deletes nothing and does not fail.
	rep, err = n.reap(st, claimed)
	if err != nil || len(rep.Deleted) != 0 || len(rep.Gone) != 2 || len(rep.Kept) != 5 {
		t.Errorf("second reap: err %v, %+v", err, rep)
	}
}

// The next sandbox of the pod has the same IP: the plugin kept the identical
// rules and routed the IP through its new veth. The old record must not take
// the rules away.
func TestReapKeepsRulesOfAnIPInUseAgain(t *testing.T) {
	n := newNode(t)
	n.bridge("old0")
	n.bridge("new0")
	n.addRule(512, "", "10.77.0.5/32", 254)
	n.addRule(1536, "10.77.0.5/32", "", 100)
	n.addRoute("10.77.0.5/32", "old0", 254)
	st := n.snapshot("10.77.0.5/32")
	n.delLink("old0")
	n.addRoute("10.77.0.5/32", "new0", 254)

	rep, err := n.reap(st, nil)
	if err != nil || len(rep.Deleted) != 0 {
		t.Fatalf("reap: err %v, %+v", err, rep)
	}
	if !containsSub(rep.Kept, "rule 512", "in use again", "dev new0") || !containsSub(rep.Kept, "rule 1536", "in use again") {
		t.Errorf("kept %q", rep.Kept)
	}
	if !containsSub(rep.Kept, "route 10.77.0.5/32 dev old0", "changed", "dev new0") {
		t.Errorf("kept %q", rep.Kept)
	}
	if len(n.liveRoutes("10.77.0.5/32")) != 1 || !contains(n.liveRules(), "1536 from=10.77.0.5/32 to= table=100 ip=") {
		t.Error("state of the new sandbox was deleted")
	}
}

// Objects that were never there, or already went, are not an error, and
// nothing unrecorded with a similar look is touched.
func TestReapMissing(t *testing.T) {
	n := newNode(t)
	n.bridge("br0")
	n.addRule(1536, "10.77.0.5/32", "", 101)
	st := State{
		Rules:  []Rule{{PodIP: "10.77.0.5", Family: 2, Priority: 1536, Table: 100, Src: "10.77.0.5/32"}},
		Routes: []Route{{PodIP: "10.77.0.5", Family: 2, Table: 254, Dst: "10.77.0.5/32", LinkIndex: 999, LinkName: "gone0", Scope: 253, Protocol: 3}},
	}
	rep, err := n.reap(st, nil)
	if err != nil || len(rep.Deleted) != 0 || len(rep.Gone) != 1 || len(rep.Kept) != 1 {
		t.Fatalf("err %v, %+v", err, rep)
	}
	if !contains(n.liveRules(), "1536 from=10.77.0.5/32 to= table=101 ip=") {
		t.Error("an unrecorded rule was deleted")
	}
	if rep, err := n.reap(State{}, nil); err != nil || len(rep.Deleted)+len(rep.Gone)+len(rep.Kept) != 0 {
		t.Errorf("empty state: err %v, %+v", err, rep)
	}
}

func TestReapIPv6(t *testing.T) {
	n := newNode(t)
	n.bridge("br0")
	n.addRule(512, "", "fd00::5/128", 254)
	n.addRule(1536, "fd00::5/128", "", 100)
	n.addRule(1536, "fd00::6/128", "", 100)
	n.addRule(1700, "fd00::/64", "", 100)
	n.addRoute("fd00::5/128", "br0", 254)
	n.addRoute("fd00::5/128", "br0", 100)
	n.addRoute("fd00::/64", "br0", 254)
	n.addRule(512, "", "10.77.0.5/32", 254) // dual stack

	st := roundTrip(t, n.snapshot("fd00::5/64", "10.77.0.5/32"))
	equalKeys(t, "rules", ruleKeys(st.Rules), sorted(
		"512 from= to=fd00::5/128 table=254 ip=fd00::5",
		"1536 from=fd00::5/128 to= table=100 ip=fd00::5",
		"512 from= to=10.77.0.5/32 table=254 ip=10.77.0.5",
	))
	equalKeys(t, "routes", routeKeys(st.Routes), sorted(
		"fd00::5/128 dev=br0 table=254 ip=fd00::5",
		"fd00::5/128 dev=br0 table=100 ip=fd00::5",
	))

	rep, err := n.reap(st, nil)
	if err != nil || len(rep.Deleted) != 5 || len(rep.Kept) != 0 {
		t.Fatalf("reap: err %v, %+v", err, rep)
	}
	if r := n.liveRoutes("fd00::5/128"); len(r) != 0 {
		t.Errorf("routes survived: %q", r)
	}
	live := n.liveRules()
	if !contains(live, "1536 from=fd00::6/128 to= table=100 ip=") || !contains(live, "1700 from=fd00::/64 to= table=100 ip=") {
		t.Errorf("unrecorded rules deleted: %q", live)
	}
	if len(n.liveRoutes("fd00::/64")) != 1 {
		t.Error("the /64 route was deleted")
	}
	if st := n.snapshot("fd00::5/128", "10.77.0.5/32"); !st.Empty() {
		t.Errorf("left after reap: %+v", st)
	}
	if rep, err := n.reap(st, nil); err != nil || len(rep.Deleted) != 0 || len(rep.Gone) != 5 {
		t.Errorf("second reap: err %v, %+v", err, rep)
	}
}

// GC reaps many records with one dump: two leaked sandboxes of one pod (the
// same rules, routes through different veths) and a claimed attachment.
func TestReapMany(t *testing.T) {
	n := newNode(t)
	n.bridge("vetha")
	n.bridge("vethb")
	n.addRule(512, "", "10.77.0.5/32", 254)
	n.addRule(1536, "10.77.0.5/32", "", 100)
	n.addRoute("10.77.0.5/32", "vetha", 254)
	a := n.snapshot("10.77.0.5/32")
	n.addRoute("10.77.0.5/32", "vethb", 254) // replaces the route of sandbox a
	b := n.snapshot("10.77.0.5/32")
	n.addRule(1536, "10.77.0.7/32", "", 100)
	c := n.snapshot("10.77.0.7/32")

	var reps []Report
	var err error
	n.do(func() error {
		reps, err = ReapMany([]State{a, b, c}, func(ip string) bool { return ip == "10.77.0.7" })
		return nil
	})
	if err != nil || len(reps) != 3 {
		t.Fatalf("err %v, reports %+v", err, reps)
	}
	// a's route changed and its rules looked in use (b's route); b then
	// took route and rules; c is claimed.
	if len(reps[0].Deleted) != 0 || len(reps[0].Kept) != 3 || len(reps[1].Deleted) != 3 ||
		len(reps[2].Kept) != 1 || len(reps[2].Deleted) != 0 {
		t.Errorf("reports %+v", reps)
	}
	if st := n.snapshot("10.77.0.5/32"); !st.Empty() {
		t.Errorf("left behind: %+v", st)
	}
	if !contains(n.liveRules(), "1536 from=10.77.0.7/32 to= table=100 ip=") {
		t.Error("the claimed rule was deleted")
	}
	n.do(func() error { reps, err = ReapMany(nil, nil); return nil })
	if err != nil || len(reps) != 0 {
		t.Errorf("no states: %v %v", reps, err)
	}
}

// The hand-written (un)marshalers keep State's JSON as it was: {} when
// empty, the full object otherwise, and decode both.
func TestStateJSONShortcuts(t *testing.T) {
	b, err := json.Marshal(State{})
	if err != nil || string(b) != "{}" {
		t.Fatalf("empty State = %s, %v; want {}", b, err)
	}
	full := State{Rules: []Rule{{Family: 2, Priority: 512, Table: 254, Dst: "10.77.0.5/32", PodIP: "10.77.0.5"}}}
	b, err = json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil || len(back.Rules) != 1 || back.Rules[0].Priority != 512 {
		t.Fatalf("round trip of %s = %+v, %v", b, back, err)
	}
	for _, in := range []string{"{}", "null", " {} "} {
		s := full
		if err := json.Unmarshal([]byte(in), &s); err != nil || !s.Empty() {
			t.Fatalf("Unmarshal(%q) = %+v, %v; want empty", in, s, err)
		}
	}
}
