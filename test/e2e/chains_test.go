package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/version"

	"github.com/leakguard/leakguard/test/cnitest"
)

// TestExampleConfs: the conflists shipped in conf/ are the ones the tests
// load, chain leakguard last with the default state dir, and speak 1.1.0.
func TestExampleConfs(t *testing.T) {
	root, err := cnitest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	mains := map[string]string{"bridge": "bridge", "ptp": "ptp", "tke-eni": "tke-eni"}
	for _, c := range chains {
		t.Run(c.name, func(t *testing.T) {
			list, err := cnitest.LoadConfList(filepath.Join(root, "conf", c.file))
			if err != nil {
				t.Fatal(err)
			}
			if list.CNIVersion != "1.1.0" {
				t.Errorf("cniVersion %q, want 1.1.0", list.CNIVersion)
			}
			if len(list.Plugins) != 2 || list.Plugins[0].Type != mains[c.name] || list.Plugins[1].Type != "leakguard" {
				t.Errorf("want [%s leakguard], got %+v", mains[c.name], list.Plugins)
			}
			raw, err := os.ReadFile(filepath.Join(root, "conf", c.file))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(raw), `"stateDir": "/run/leakguard"`) {
				t.Errorf("example does not use the default stateDir /run/leakguard")
			}
		})
	}
}

// TestRoundTrip: a normal pod lifecycle through each chain with leakguard, in
// every spec version cnitool and the main plugins share: STATUS passes
// (1.1.0), ADD wires the pod and leakguard records it, CHECK passes (0.4.0+), DEL with the netns alive
// removes the pod's veth and its record, and a repeated DEL succeeds.
func TestRoundTrip(t *testing.T) {
	for _, c := range chains {
		for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
			t.Run(c.name+"/"+v, func(t *testing.T) {
				e := newEnv(t, c, v, true)
				p := e.newPod(0)
				if ok, _ := version.GreaterThanOrEqualTo(v, "1.1.0"); ok {
					if _, err := e.run("status", p); err != nil {
						t.Errorf("STATUS: %v", err)
					}
				}
				e.add(p)
				e.assertRecorded(p)
				if ok, _ := version.GreaterThanOrEqualTo(v, "0.4.0"); ok {
					if _, err := e.run("check", p); err != nil {
						t.Errorf("CHECK after ADD: %v", err)
					}
				}
				before := e.nodeLinks()
				if _, err := e.run("del", p); err != nil {
					t.Fatalf("DEL: %v", err)
				}
				e.assertOnlyGone(before, p.host.Attrs().Index)
				if e.podHasEth0(p) {
					t.Errorf("pod eth0 survived DEL")
				}
				if recs := e.records(p); len(recs) != 0 {
					t.Errorf("leakguard record survived DEL: %v", recs)
				}
				if c.podOwnedRules {
					if rules, _ := e.podRulesAndRoutes(tkePodIP(p.i)); len(rules) != 0 {
						t.Errorf("main plugin's DEL left rules: %s", describe(rules))
					}
				}
				if _, err := e.run("del", p); err != nil {
					t.Errorf("second DEL: %v", err)
				}
			})
		}
	}
}

// TestLeak: the production failure. Pod A's netns leaks (path gone, netns
// alive), then the runtime's DEL arrives with the missing path. The main
// plugin cannot enter the netns and does nothing; leakguard must reap A's
// host veth (and with it the peer inside the leaked netns) and touch nothing
// else: the bridge, the ENI link and neighbour pod B stay as they were.
func TestLeak(t *testing.T) {
	for _, c := range chains {
		for _, v := range []string{"0.3.1", "1.1.0"} {
			t.Run(c.name+"/"+v, func(t *testing.T) {
				e := newEnv(t, c, v, true)
				a, b := e.newPod(0), e.newPod(1)
				e.add(a)
				e.add(b)
				e.assertRecorded(a)
				e.assertRecorded(b)
				before := e.nodeLinks()
				var ipA net.IP
				if c.podOwnedRules {
					ipA = tkePodIP(a.i)
					rules, routes := e.podRulesAndRoutes(ipA)
					t.Logf("pod A %s before the leak: rules: %s; routes: %s", ipA, describe(rules), describe(routes))
				}

				e.leak(a)
				if _, err := e.run("del", a); err != nil {
					t.Fatalf("DEL with the netns path gone: %v", err)
				}

				e.assertOnlyGone(before, a.host.Attrs().Index)
				if e.podHasEth0(a) {
					t.Errorf("pod A eth0 still alive inside the leaked netns")
				}
				if recs := e.records(a); len(recs) != 0 {
					t.Errorf("leakguard record of A survived DEL: %v", recs)
				}
				if !e.podHasEth0(b) {
					t.Errorf("neighbour pod B lost its eth0")
				}
				if recs := e.records(b); len(recs) != 1 {
					t.Errorf("neighbour pod B: want its record kept, got %d", len(recs))
				}
				if c.podOwnedRules {
					rules, routes := e.podRulesAndRoutes(ipA)
					t.Logf("pod A %s after DEL: rules left: %s; routes left: %s", ipA, describe(rules), describe(routes))
					// README: rules and routes to the pod IPs recorded at ADD
					// are deleted when unchanged and claimed by no live pod.
					if len(rules) != 0 || len(routes) != 0 {
						t.Errorf("leaked pod A's rules/routes survived DEL")
					}
					e.assertENITableRoute()
					rulesB, routesB := e.podRulesAndRoutes(tkePodIP(b.i))
					if len(rulesB) != 2 || len(routesB) != 1 {
						t.Errorf("neighbour pod B: want 2 rules and 1 route, got rules: %s; routes: %s", describe(rulesB), describe(routesB))
					}
				}
				if ok, _ := version.GreaterThanOrEqualTo(v, "0.4.0"); ok {
					if _, err := e.run("check", b); err != nil {
						t.Errorf("CHECK of neighbour pod B after A's DEL: %v", err)
					}
				}

				if _, err := e.run("del", a); err != nil {
					t.Errorf("repeated DEL of A: %v", err)
				}
				if _, err := e.run("del", b); err != nil {
					t.Errorf("DEL of B: %v", err)
				}
				if e.hostVethAlive(b) {
					t.Errorf("B's host veth survived B's DEL")
				}
			})
		}
	}
}

// TestLeakWithoutLeakguard is the control: the same chains without leakguard
// leave the leaked pod's host veth (and its peer) behind, so TestLeak can fail.
func TestLeakWithoutLeakguard(t *testing.T) {
	for _, c := range chains {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c, "1.1.0", false)
			a := e.newPod(0)
			e.add(a)
			e.leak(a)
			if _, err := e.run("del", a); err != nil {
				t.Fatalf("DEL with the netns path gone: %v", err)
			}
			if !e.hostVethAlive(a) {
				t.Fatalf("host veth %s is gone without leakguard: the leak scenario does not reproduce the bug", a.host.Attrs().Name)
			}
			if !e.podHasEth0(a) {
				t.Errorf("pod eth0 gone from the leaked netns without leakguard")
			}
			if c.podOwnedRules {
				rules, routes := e.podRulesAndRoutes(tkePodIP(a.i))
				t.Logf("left behind without leakguard: veth %s; rules: %s; routes: %s", a.host.Attrs().Name, describe(rules), describe(routes))
				if len(rules) != 2 || len(routes) != 1 {
					t.Errorf("tke-eni's DEL without a netns path must do nothing at all")
				}
			} else {
				t.Logf("left behind without leakguard: veth %s", a.host.Attrs().Name)
			}
		})
	}
}

// TestLateDelAfterRecreate: tke-eni names the host veth after the pod, so the
// next sandbox of the same pod gets the same name (its ADD deletes the stale
// veth first). When the leaked sandbox's DEL arrives late, the veth with its
// name now belongs to the new sandbox: leakguard must leave it alone.
func TestLateDelAfterRecreate(t *testing.T) {
	c := chains[2]
	if c.name != "tke-eni" {
		t.Fatalf("chains[2] is %s, want tke-eni", c.name)
	}
	e := newEnv(t, c, "1.1.0", true)
	old := e.newPod(0)
	e.add(old)
	e.leak(old)

	fresh := e.newPod(0)
	e.add(fresh)
	if fresh.host.Attrs().Name != old.host.Attrs().Name {
		t.Fatalf("host veth names differ (%s vs %s): the test plugin is not deterministic", fresh.host.Attrs().Name, old.host.Attrs().Name)
	}
	if fresh.host.Attrs().Index == old.host.Attrs().Index {
		t.Fatalf("new sandbox reuses ifindex %d: cannot tell the veths apart", fresh.host.Attrs().Index)
	}
	if e.podHasEth0(old) {
		t.Fatalf("tke-eni's ADD did not delete the stale host veth (the old sandbox's eth0 is alive)")
	}
	before := e.nodeLinks()

	if _, err := e.run("del", old); err != nil {
		t.Fatalf("late DEL of the leaked sandbox: %v", err)
	}
	e.assertOnlyGone(before)
	if !e.hostVethAlive(fresh) {
		t.Errorf("late DEL of the old sandbox deleted the new sandbox's veth %s", fresh.host.Attrs().Name)
	}
	if !e.podHasEth0(fresh) {
		t.Errorf("new sandbox lost its eth0")
	}
	if recs := e.records(old); len(recs) != 0 {
		t.Errorf("record of the old sandbox survived its DEL: %v", recs)
	}
	e.assertENITableRoute()
	// Same pod, same IP: the old sandbox's rules are the new one's now.
	if rules, routes := e.podRulesAndRoutes(tkePodIP(fresh.i)); len(rules) != 2 || len(routes) != 1 {
		t.Errorf("new sandbox: want its 2 rules and 1 route, got rules: %s; routes: %s", describe(rules), describe(routes))
	}
	if _, err := e.run("check", fresh); err != nil {
		t.Errorf("CHECK of the new sandbox after the late DEL: %v", err)
	}
	if _, err := e.run("del", fresh); err != nil {
		t.Errorf("DEL of the new sandbox: %v", err)
	}
}
