package podroute

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Report says what Reap did with each recorded object, one line each, for
// the caller's log.
type Report struct {
	Deleted []string `json:"deleted,omitempty"`
	Gone    []string `json:"gone,omitempty"` // already absent: nothing to do
	Kept    []string `json:"kept,omitempty"` // "<object>: <reason>"
}

// Reap deletes, in the current netns, the recorded rules and routes that
// still exist unchanged (every kernel attribute, and for routes the device's
// ifindex and name) and whose pod IP claimed reports as not owned by another
// live attachment. claimed gets the address without prefix ("10.77.0.5",
// "fd00::5"); a nil claimed claims nothing. Missing objects are fine;
// nothing that was not recorded is deleted.
//
// A rule is also kept when its pod IP is now routed by a route that was not
// recorded (e.g. the next sandbox of the pod, whose identical rules the
// plugin kept as they were): the IP is in use again.
//
// Reap continues past errors and returns them joined.
func Reap(recorded State, claimed func(ip string) bool) (Report, error) {
	reps, err := ReapMany([]State{recorded}, claimed)
	return reps[0], err
}

// ReapMany is Reap over the states of several attachments (GC) with one dump
// of the rules and routes per family for all of them. reports[i] belongs to
// recorded[i]. If the dump fails nothing is touched and the reports are
// empty.
func ReapMany(recorded []State, claimed func(ip string) bool) ([]Report, error) {
	reports := make([]Report, len(recorded))
	if claimed == nil {
		claimed = func(string) bool { return false }
	}
	var all State
	for _, st := range recorded {
		all.Rules = append(all.Rules, st.Rules...)
		all.Routes = append(all.Routes, st.Routes...)
	}
	if all.Empty() {
		return reports, nil
	}
	live, err := listLive(all)
	if err != nil {
		return reports, err
	}
	var errs []error
	for i, st := range recorded {
		rep := &reports[i]
		for _, r := range st.Routes {
			errs = append(errs, live.reapRoute(r, claimed, rep))
		}
		for _, r := range st.Rules {
			errs = append(errs, live.reapRule(r, st, claimed, rep))
		}
	}
	return reports, errors.Join(errs...)
}

// liveState is the current routing state of the families being reaped,
// rules indexed by selector and routes by destination; objects leave it as
// they are deleted.
type liveState struct {
	rules  map[string][]Rule
	routes map[string][]Route
}

func selector(r Rule) string { return fmt.Sprintf("%d %s %s", r.Family, r.Src, r.Dst) }

func listLive(recorded State) (*liveState, error) {
	var fams [2]bool // v4, v6
	for _, r := range recorded.Rules {
		fams[famIdx(r.Family)] = true
	}
	for _, r := range recorded.Routes {
		fams[famIdx(r.Family)] = true
	}
	// Only routes to a recorded pod IP can match a record or show the IP
	// in use: resolve device names for those alone.
	dsts := map[string]bool{}
	for _, r := range recorded.Routes {
		dsts[r.Dst] = true
	}
	for _, r := range recorded.Rules {
		if a, err := netip.ParseAddr(r.PodIP); err == nil {
			dsts[netip.PrefixFrom(a, a.BitLen()).String()] = true
		}
	}
	live := &liveState{rules: map[string][]Rule{}, routes: map[string][]Route{}}
	links := linkNames{}
	for i, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if !fams[i] {
			continue
		}
		rules, err := listRules(family)
		if err != nil {
			return live, err
		}
		for _, nr := range rules {
			r := ruleFromNetlink(nr)
			live.rules[selector(r)] = append(live.rules[selector(r)], r)
		}
		routes, err := listRoutes(family)
		if err != nil {
			return live, err
		}
		for _, nr := range routes {
			if dst := ipNetString(nr.Dst); dsts[dst] && len(nr.MultiPath) == 0 {
				live.routes[dst] = append(live.routes[dst], routeFromNetlink(nr, links.name(nr.LinkIndex)))
			}
		}
	}
	return live, nil
}

func famIdx(family int) int {
	if family == netlink.FAMILY_V6 {
		return 1
	}
	return 0
}

func (live *liveState) reapRoute(r Route, claimed func(string) bool, rep *Report) error {
	if !has(live.routes[r.Dst], r, sameRoute) {
		for _, l := range live.routes[r.Dst] {
			if l.Table == r.Table {
				rep.Kept = append(rep.Kept, fmt.Sprintf("%s: changed since ADD, now %s", r, l))
				return nil
			}
		}
		rep.Gone = append(rep.Gone, r.String())
		return nil
	}
	if claimed(r.PodIP) {
		rep.Kept = append(rep.Kept, fmt.Sprintf("%s: %s is claimed by another attachment", r, r.PodIP))
		return nil
	}
	nr, err := r.toNetlink()
	if err == nil {
		err = netlink.RouteDel(nr)
	}
	switch {
	case err == nil:
		rep.Deleted = append(rep.Deleted, r.String())
		live.routes[r.Dst] = without(live.routes[r.Dst], r, sameRoute)
	case errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT):
		rep.Gone = append(rep.Gone, r.String())
		live.routes[r.Dst] = without(live.routes[r.Dst], r, sameRoute)
	default:
		rep.Kept = append(rep.Kept, fmt.Sprintf("%s: delete failed: %v", r, err))
		return fmt.Errorf("failed to delete %s: %w", r, err)
	}
	return nil
}

func (live *liveState) reapRule(r Rule, recorded State, claimed func(string) bool, rep *Report) error {
	sel := selector(r)
	if !has(live.rules[sel], r, sameRule) {
		for _, l := range live.rules[sel] {
			rep.Kept = append(rep.Kept, fmt.Sprintf("%s: changed since ADD, now %s", r, l))
			return nil
		}
		rep.Gone = append(rep.Gone, r.String())
		return nil
	}
	for _, ip := range ruleIPs(r) {
		if claimed(ip) {
			rep.Kept = append(rep.Kept, fmt.Sprintf("%s: %s is claimed by another attachment", r, ip))
			return nil
		}
	}
	if l, ok := live.foreignRoute(r.PodIP, recorded); ok {
		rep.Kept = append(rep.Kept, fmt.Sprintf("%s: %s is in use again (%s was not recorded)", r, r.PodIP, l))
		return nil
	}
	nr, err := r.toNetlink()
	if err == nil {
		err = netlink.RuleDel(nr)
	}
	switch {
	case err == nil:
		rep.Deleted = append(rep.Deleted, r.String())
		live.rules[sel] = without(live.rules[sel], r, sameRule)
	case errors.Is(err, unix.ENOENT):
		rep.Gone = append(rep.Gone, r.String())
		live.rules[sel] = without(live.rules[sel], r, sameRule)
	default:
		rep.Kept = append(rep.Kept, fmt.Sprintf("%s: delete failed: %v", r, err))
		return fmt.Errorf("failed to delete %s: %w", r, err)
	}
	return nil
}

// ruleIPs are the addresses the rule selects as host prefixes: its pod IP
// and, should it select two, the other one too.
func ruleIPs(r Rule) []string {
	ips := []string{r.PodIP}
	for _, s := range []string{r.Src, r.Dst} {
		if p, err := netip.ParsePrefix(s); err == nil && p.IsSingleIP() {
			if a := p.Addr().Unmap().String(); a != r.PodIP {
				ips = append(ips, a)
			}
		}
	}
	return ips
}

// foreignRoute finds a live route to ip's host prefix that is none of the
// recorded ones.
func (live *liveState) foreignRoute(ip string, recorded State) (Route, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return Route{}, false
	}
	for _, l := range live.routes[netip.PrefixFrom(a, a.BitLen()).String()] {
		if !has(recorded.Routes, l, sameRoute) {
			return l, true
		}
	}
	return Route{}, false
}

func has[T any](list []T, x T, same func(a, b T) bool) bool {
	for _, y := range list {
		if same(x, y) {
			return true
		}
	}
	return false
}

func without[T any](list []T, x T, same func(a, b T) bool) []T {
	out := list[:0]
	for _, y := range list {
		if !same(x, y) {
			out = append(out, y)
		}
	}
	return out
}
