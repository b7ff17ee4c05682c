package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/test/cnitest"
	"github.com/leakguard/leakguard/test/nsutil"
)

// TestWrappedExampleConfs: the wrapper examples of conf/ are single .conf
// files of type leakguard with the default state dir, pinning on, and the
// main plugin under "delegate" without a name or version of its own.
func TestWrappedExampleConfs(t *testing.T) {
	root, err := cnitest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range wrappedChains {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(root, "conf", c.file)
			list, err := cnitest.LoadConfList(path)
			if err != nil {
				t.Fatal(err)
			}
			if !list.Single || list.CNIVersion != "1.1.0" || list.Plugins[0].Type != "leakguard" {
				t.Errorf("want a 1.1.0 .conf of type leakguard, got %+v", list)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var conf struct {
				StateDir string         `json:"stateDir"`
				PinNetns bool           `json:"pinNetns"`
				Delegate map[string]any `json:"delegate"`
			}
			if err := json.Unmarshal(raw, &conf); err != nil {
				t.Fatal(err)
			}
			if conf.StateDir != "/run/leakguard" || !conf.PinNetns {
				t.Errorf("want stateDir /run/leakguard and pinNetns on, got %q, %v", conf.StateDir, conf.PinNetns)
			}
			if conf.Delegate["type"] != c.mainType() {
				t.Errorf("delegate type %v, want %s", conf.Delegate["type"], c.mainType())
			}
			for _, k := range []string{"name", "cniVersion"} {
				if _, ok := conf.Delegate[k]; ok {
					t.Errorf("delegate sets %q: the wrapper gives it its own", k)
				}
			}
			if c.masq && conf.Delegate["ipMasq"] != true {
				t.Errorf("example %s should masquerade (ipMasq true): the wrapper is what makes its teardown work", c.file)
			}
		})
	}
}

// TestWrappedRoundTrip: a normal pod lifecycle through each wrapper example,
// netns alive throughout: STATUS (1.1.0) reaches the delegate, ADD prints
// the main plugin's result and records it with the rendered delegate and a
// pin, CHECK passes (0.4.0+), DEL runs the main plugin's own DEL with the
// runtime's netns (host veth gone, IP released, masquerade chain gone, tke-eni
// rules gone), removes the pin and the record; a repeated DEL succeeds.
func TestWrappedRoundTrip(t *testing.T) {
	for _, c := range wrappedChains {
		for _, v := range []string{"0.3.1", "0.4.0", "1.1.0"} {
			t.Run(c.name+"/"+v, func(t *testing.T) {
				e := newEnvWith(t, c, envOptions{version: v})
				p := e.newPod(0)
				if ok, _ := version.GreaterThanOrEqualTo(v, "1.1.0"); ok {
					if _, err := e.run("status", p); err != nil {
						t.Errorf("STATUS: %v", err)
					}
				}
				e.add(p)
				e.assertRecorded(p)
				if rec := e.records(p)[0]; !strings.Contains(rec, `"delegate"`) || !strings.Contains(rec, `"type":"`+c.mainType()+`"`) {
					t.Errorf("record lacks the rendered %s delegate:\n%s", c.mainType(), rec)
				}
				e.assertPinned(p)
				if c.masq {
					e.assertMasquerade(p)
				}
				if c.hostLocal && !e.ipHeld(p.podIP()) {
					t.Fatalf("host-local does not hold %s after ADD", p.podIP())
				}
				if ok, _ := version.GreaterThanOrEqualTo(v, "0.4.0"); ok {
					if _, err := e.run("check", p); err != nil {
						t.Errorf("CHECK after ADD: %v", err)
					}
				}
				before := e.nodeLinks()
				runs := len(e.logged(p, "main plugin's DEL done"))
				if _, err := e.run("del", p); err != nil {
					t.Fatalf("DEL: %v", err)
				}
				e.assertDelegateDel(p, runs, p.path)
				e.assertOnlyGone(before, p.host.Attrs().Index)
				if e.podHasEth0(p) {
					t.Errorf("pod eth0 survived DEL")
				}
				if c.hostLocal && e.ipHeld(p.podIP()) {
					t.Errorf("host-local still holds %s after DEL", p.podIP())
				}
				if rules := e.natRules(p); len(rules) != 0 {
					t.Errorf("masquerade rules survived DEL:\n%s", strings.Join(rules, "\n"))
				}
				if c.podOwnedRules {
					if rules, routes := e.podRulesAndRoutes(tkePodIP(p.i)); len(rules)+len(routes) != 0 {
						t.Errorf("tke-eni's DEL left rules: %s; routes: %s", describe(rules), describe(routes))
					}
				}
				if left := e.stateFiles(p); len(left) != 0 {
					t.Errorf("state left after DEL: %v", left)
				}
				if left := e.pinsLeft(); len(left) != 0 {
					t.Errorf("pins left after DEL: %v", left)
				}
				if _, err := e.run("del", p); err != nil {
					t.Errorf("second DEL: %v", err)
				}
			})
		}
	}
}

// TestWrappedLeak: the production failure in wrapper mode. Pod A's netns
// leaks (path gone, netns kept alive by a socket), then DEL comes with the
// missing path.
//
// With the pin, the main plugin's own DEL runs through the pin: it deletes
// the pod interface (and with it the host veth), releases the IP, and tears
// down what it keyed on the pod's addresses (bridge's and ptp's masquerade
// chain, tke-eni's ip rules): leakguard has nothing left to reap, and the
// pin goes.
//
// Without a pin, the main plugin's DEL gets an empty CNI_NETNS: bridge and
// ptp release the IP only, and leave their masquerade chain (they learn the
// addresses it matches from the container interface they cannot reach);
// tke-eni does nothing at all. leakguard reaps the host veth (its peer goes
// with it) and tke-eni's recorded rules and route.
//
// Either way DEL succeeds and neighbour pod B keeps everything.
func TestWrappedLeak(t *testing.T) {
	for _, c := range wrappedChains {
		for _, pinned := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/pin=%v", c.name, pinned), func(t *testing.T) {
				e := newEnvWith(t, c, envOptions{version: "1.1.0", pin: boolPtr(pinned)})
				a, b := e.newPod(0), e.newPod(1)
				e.add(a)
				e.add(b)
				e.assertRecorded(a)
				if pinned {
					e.assertPinned(a)
				} else if left := e.pinsLeft(); len(left) != 0 {
					t.Fatalf("pins with pinNetns off: %v", left)
				}
				if c.masq {
					e.assertMasquerade(a)
					e.assertMasquerade(b)
				}
				masqB := e.natRules(b)
				before := e.nodeLinks()

				e.leak(a)
				runs := len(e.logged(a, "main plugin's DEL done"))
				if _, err := e.run("del", a); err != nil {
					t.Fatalf("DEL with the netns path gone: %v", err)
				}

				wantNetns := ""
				if pinned {
					wantNetns = e.pinPath(a)
				}
				e.assertDelegateDel(a, runs, wantNetns)
				e.assertOnlyGone(before, a.host.Attrs().Index)
				if e.podHasEth0(a) {
					t.Errorf("pod A eth0 still alive inside the leaked netns")
				}
				reaped := len(e.logged(a, "reaped host link of gone netns"))
				if pinned && reaped != 0 {
					t.Errorf("leakguard reaped A's host veth: the main plugin's own DEL through the pin should have")
				}
				if !pinned && reaped != 1 {
					t.Errorf("want leakguard to reap A's host veth once, log says %d", reaped)
				}
				if c.hostLocal && e.ipHeld(a.podIP()) {
					t.Errorf("host-local still holds A's %s", a.podIP())
				}
				if c.masq {
					rules := e.natRules(a)
					if pinned && len(rules) != 0 {
						t.Errorf("A's masquerade rules survived the main plugin's DEL through the pin:\n%s", strings.Join(rules, "\n"))
					}
					if !pinned {
						// What really happens without a pin: the main
						// plugin cannot learn A's addresses, so its chain
						// stays (README: chained and wrapped, no pin).
						if len(rules) == 0 {
							t.Errorf("without a pin %s removed A's masquerade chain: README's table is wrong", c.name)
						}
						t.Logf("left without a pin (expected):\n%s", strings.Join(rules, "\n"))
					}
				}
				if c.podOwnedRules {
					rules, routes := e.podRulesAndRoutes(tkePodIP(a.i))
					if len(rules)+len(routes) != 0 {
						t.Errorf("A's rules/routes survived DEL: %s; %s", describe(rules), describe(routes))
					}
					reapedRouting := len(e.logged(a, "reaped pod-IP routing state"))
					if pinned && reapedRouting != 0 {
						t.Errorf("leakguard reaped A's rules: tke-eni's own DEL through the pin should have")
					}
					if !pinned && reapedRouting == 0 {
						t.Errorf("without a pin leakguard should have reaped A's recorded rules and route")
					}
					e.assertENITableRoute()
					if rulesB, routesB := e.podRulesAndRoutes(tkePodIP(b.i)); len(rulesB) != 2 || len(routesB) != 1 {
						t.Errorf("neighbour B: want 2 rules and 1 route, got %s; %s", describe(rulesB), describe(routesB))
					}
				}
				if left := e.stateFiles(a); len(left) != 0 {
					t.Errorf("state of A left after DEL: %v", left)
				}
				if pinned {
					for _, l := range e.pinsLeft() {
						if !strings.HasSuffix(l, filepath.Base(e.pinPath(b))) {
							t.Errorf("want only B's pin left, got %s", l)
						}
					}
				}

				if !e.podHasEth0(b) || !e.hostVethAlive(b) {
					t.Errorf("neighbour B lost its interfaces")
				}
				if c.hostLocal && !e.ipHeld(b.podIP()) {
					t.Errorf("neighbour B's IP was released")
				}
				if got := e.natRules(b); strings.Join(got, "\n") != strings.Join(masqB, "\n") {
					t.Errorf("neighbour B's masquerade rules changed:\n%s\n->\n%s", strings.Join(masqB, "\n"), strings.Join(got, "\n"))
				}
				if _, err := e.run("check", b); err != nil {
					t.Errorf("CHECK of B after A's DEL: %v", err)
				}

				if _, err := e.run("del", a); err != nil {
					t.Errorf("repeated DEL of A: %v", err)
				}
				if _, err := e.run("del", b); err != nil {
					t.Errorf("DEL of B: %v", err)
				}
				if e.hostVethAlive(b) || len(e.natRules(b)) != 0 {
					t.Errorf("B's DEL left its veth or masquerade rules")
				}
				if left := e.pinsLeft(); len(left) != 0 {
					t.Errorf("pins left after every DEL: %v", left)
				}
			})
		}
	}
}

// TestWrappedLeftoverFile: after the leak, a regular file sits at the netns
// path (an unmounted tmpfs mount point). leakguard never hands it to the main
// plugin: bridge's DEL gets the pin (full teardown) or no netns (IP release),
// so the whole DEL succeeds and the IP is released. Compare
// TestChainedLeftoverFile.
func TestWrappedLeftoverFile(t *testing.T) {
	c := wrappedChains[0]
	for _, pinned := range []bool{true, false} {
		t.Run(fmt.Sprintf("pin=%v", pinned), func(t *testing.T) {
			e := newEnvWith(t, c, envOptions{version: "1.1.0", pin: boolPtr(pinned)})
			a := e.newPod(0)
			e.add(a)
			before := e.nodeLinks()
			e.leak(a)
			leaveLeftover(t, a.path)
			runs := len(e.logged(a, "main plugin's DEL done"))
			if _, err := e.run("del", a); err != nil {
				t.Fatalf("DEL with a leftover file at the netns path: %v", err)
			}
			wantNetns := ""
			if pinned {
				wantNetns = e.pinPath(a)
			}
			e.assertDelegateDel(a, runs, wantNetns)
			e.assertOnlyGone(before, a.host.Attrs().Index)
			if e.podHasEth0(a) {
				t.Errorf("pod eth0 still alive inside the leaked netns")
			}
			if e.ipHeld(a.podIP()) {
				t.Errorf("host-local still holds %s", a.podIP())
			}
			if rules := e.natRules(a); pinned && len(rules) != 0 {
				t.Errorf("masquerade rules survived the DEL through the pin:\n%s", strings.Join(rules, "\n"))
			}
			if left := e.stateFiles(a); len(left) != 0 {
				t.Errorf("state left: %v", left)
			}
			if left := e.pinsLeft(); len(left) != 0 {
				t.Errorf("pins left: %v", left)
			}
			if _, err := e.run("del", a); err != nil {
				t.Errorf("repeated DEL: %v", err)
			}
		})
	}
}

// TestChainedLeftoverFile documents chained mode's different outcome with a
// leftover file at the netns path: leakguard's DEL (first in the chain)
// reaps the host veth, but bridge's DEL then fails on a path that exists
// and is not a netns, before its IPAM release; the IP stays allocated and
// every retry fails the same way, until the file goes.
func TestChainedLeftoverFile(t *testing.T) {
	for _, pinned := range []bool{true, false} {
		t.Run(fmt.Sprintf("pin=%v", pinned), func(t *testing.T) {
			e := newEnvWith(t, chains[0], envOptions{version: "1.1.0", pin: boolPtr(pinned)})
			a := e.newPod(0)
			e.add(a)
			before := e.nodeLinks()
			e.leak(a)
			leaveLeftover(t, a.path)
			for try := range 2 {
				_, err := e.run("del", a)
				if err == nil || !strings.Contains(err.Error(), `type="bridge"`) || strings.Contains(err.Error(), `type="leakguard"`) {
					t.Fatalf("DEL %d: want bridge's own failure on the leftover file, got %v", try, err)
				}
				t.Logf("DEL %d: %v", try, err)
				e.assertOnlyGone(before, a.host.Attrs().Index)
				if !e.ipHeld(a.podIP()) {
					t.Fatalf("bridge released %s despite failing: the chained outcome changed, update README", a.podIP())
				}
			}
			if e.podHasEth0(a) {
				t.Errorf("leakguard did not remove the leaked pod's veth")
			}
			if left := e.pinsLeft(); len(left) != 0 {
				t.Errorf("pins left: %v", left)
			}
			if err := os.Remove(a.path); err != nil {
				t.Fatal(err)
			}
			if _, err := e.run("del", a); err != nil {
				t.Fatalf("DEL once the leftover file is gone: %v", err)
			}
			if e.ipHeld(a.podIP()) {
				t.Errorf("host-local still holds %s once the path is gone", a.podIP())
			}
		})
	}
}

// TestChainedLeakMasquerade documents what chained mode leaves of bridge's
// and ptp's masquerade (ipMasq on) when the netns is gone, with and without
// a pin: leakguard runs first and removes the pod's interfaces (reaping the
// host veth, or from inside through the pin), then the main plugin's DEL
// finds no netns at the path and releases the IP only: its masquerade chain
// for the pod stays.
func TestChainedLeakMasquerade(t *testing.T) {
	for _, c := range chains[:2] {
		for _, pinned := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/pin=%v", c.name, pinned), func(t *testing.T) {
				e := newEnvWith(t, c, envOptions{version: "1.1.0", pin: boolPtr(pinned), main: map[string]any{"ipMasq": true}})
				a := e.newPod(0)
				e.add(a)
				e.assertMasquerade(a)
				before := e.nodeLinks()
				e.leak(a)
				if _, err := e.run("del", a); err != nil {
					t.Fatalf("DEL: %v", err)
				}
				e.assertOnlyGone(before, a.host.Attrs().Index)
				if e.podHasEth0(a) {
					t.Errorf("pod eth0 still alive inside the leaked netns")
				}
				if e.ipHeld(a.podIP()) {
					t.Errorf("host-local still holds %s", a.podIP())
				}
				rules := e.natRules(a)
				if len(rules) == 0 {
					t.Fatalf("chained mode removed the masquerade chain: README's table is wrong")
				}
				t.Logf("chained, pin=%v, left behind (expected):\n%s", pinned, strings.Join(rules, "\n"))
				if left := e.pinsLeft(); len(left) != 0 {
					t.Errorf("pins left: %v", left)
				}
			})
		}
	}
}

// TestChainedLeakPinned: chained mode with pinNetns, netns leaked: leakguard
// (first in the chain's DEL) deletes the pod's interfaces from inside
// through the pin (the host veth goes with them) and reaps tke-eni's
// recorded rules and route; the main plugin's DEL then finds no netns and
// releases the IP (host-local) or does nothing (tke-eni). DEL succeeds.
func TestChainedLeakPinned(t *testing.T) {
	for _, c := range chains {
		t.Run(c.name, func(t *testing.T) {
			e := newEnvWith(t, c, envOptions{version: "1.1.0", pin: boolPtr(true)})
			a := e.newPod(0)
			e.add(a)
			e.assertPinned(a)
			before := e.nodeLinks()
			e.leak(a)
			if _, err := e.run("del", a); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			e.assertOnlyGone(before, a.host.Attrs().Index)
			if e.podHasEth0(a) {
				t.Errorf("pod eth0 still alive inside the leaked netns")
			}
			if len(e.logged(a, "deleted pod interface from inside the leaked netns")) != 1 {
				t.Errorf("leakguard did not delete eth0 from inside through the pin")
			}
			if c.hostLocal && e.ipHeld(a.podIP()) {
				t.Errorf("host-local still holds %s", a.podIP())
			}
			if c.podOwnedRules {
				if rules, routes := e.podRulesAndRoutes(tkePodIP(a.i)); len(rules)+len(routes) != 0 {
					t.Errorf("rules/routes left: %s; %s", describe(rules), describe(routes))
				}
				e.assertENITableRoute()
			}
			if left := e.pinsLeft(); len(left) != 0 {
				t.Errorf("pins left: %v", left)
			}
			if left := e.stateFiles(a); len(left) != 0 {
				t.Errorf("state left: %v", left)
			}
		})
	}
}

// leaveLeftover puts a regular file where the leaked netns was mounted.
func leaveLeftover(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(path) })
}

// TestWrappedPathReused: after the leak another live netns is mounted at the
// pod's old path, holding an eth0 of its own. Chained, the main plugin gets
// that path from the runtime (TestLeakPathReused); wrapped, leakguard hands
// the main plugin the pin or no netns at all, never the path, so bridge's
// DEL cannot delete the other netns's eth0. DEL succeeds, the leaked pod is
// cleaned up, the other netns is untouched.
func TestWrappedPathReused(t *testing.T) {
	c := wrappedChains[0]
	for _, pinned := range []bool{true, false} {
		t.Run(fmt.Sprintf("pin=%v", pinned), func(t *testing.T) {
			e := newEnvWith(t, c, envOptions{version: "1.1.0", pin: boolPtr(pinned)})
			a := e.newPod(0)
			e.add(a)
			before := e.nodeLinks()
			e.leak(a)

			other := nsutil.NewNS(t)
			oh, err := netlinksafe.NewHandleAt(netns.NsHandle(other.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			defer oh.Close()
			attrs := netlink.NewLinkAttrs()
			attrs.Name = "eth0"
			if err := oh.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth1"}); err != nil {
				t.Fatalf("create eth0 in the other netns: %v", err)
			}
			otherBefore := linkSet(t, oh)
			leaveLeftover(t, a.path)
			if err := unix.Mount(other.Path(), a.path, "none", unix.MS_BIND, ""); err != nil {
				t.Fatalf("mount the other netns at %s: %v", a.path, err)
			}
			t.Cleanup(func() { _ = unix.Unmount(a.path, unix.MNT_DETACH) })

			runs := len(e.logged(a, "main plugin's DEL done"))
			if _, err := e.run("del", a); err != nil {
				t.Fatalf("DEL with another netns at the path: %v", err)
			}
			wantNetns := ""
			if pinned {
				wantNetns = e.pinPath(a)
			}
			e.assertDelegateDel(a, runs, wantNetns)
			if got := linkSet(t, oh); fmt.Sprint(got) != fmt.Sprint(otherBefore) {
				t.Errorf("links of the netns now at the path changed: %v -> %v", otherBefore, got)
			}
			e.assertOnlyGone(before, a.host.Attrs().Index)
			if e.podHasEth0(a) {
				t.Errorf("pod A eth0 still alive inside the leaked netns")
			}
			if e.ipHeld(a.podIP()) {
				t.Errorf("host-local still holds %s", a.podIP())
			}
			if left := e.pinsLeft(); len(left) != 0 {
				t.Errorf("pins left: %v", left)
			}
		})
	}
}
