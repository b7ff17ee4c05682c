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
	var rep Report
	if recorded.Empty() {
		return rep, nil
	}
	if claimed == nil {
		claimed = func(string) bool { return false }
	}
	live, err := listLive(recorded)
	if err != nil {
		return rep, err
	}
	var errs []error
	for i, r := range recorded.Routes {
		if has(recorded.Routes[:i], r, sameRoute) {
			continue
		}
		if err := reapRoute(r, live, claimed, &rep); err != nil {
			errs = append(errs, err)
		}
	}
	for i, r := range recorded.Rules {
		if has(recorded.Rules[:i], r, sameRule) {
			continue
		}
		if err := reapRule(r, recorded, live, claimed, &rep); err != nil {
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

// liveState is the current routing state of the families Reap deals with.
type liveState struct {
	rules  []Rule
	routes []Route
}

func listLive(recorded State) (liveState, error) {
	var fams [2]bool // v4, v6
	for _, r := range recorded.Rules {
		fams[famIdx(r.Family)] = true
	}
	for _, r := range recorded.Routes {
		fams[famIdx(r.Family)] = true
	}
	var live liveState
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
			live.rules = append(live.rules, ruleFromNetlink(nr))
		}
		routes, err := listRoutes(family)
		if err != nil {
			return live, err
		}
		for _, nr := range routes {
			// Only host routes can match a record or show an IP in use.
			if _, ok := hostAddr(nr.Dst); ok && len(nr.MultiPath) == 0 {
				live.routes = append(live.routes, routeFromNetlink(nr, links.name(nr.LinkIndex)))
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

func reapRoute(r Route, live liveState, claimed func(string) bool, rep *Report) error {
	if !has(live.routes, r, sameRoute) {
		for _, l := range live.routes {
			if l.Dst == r.Dst && l.Table == r.Table {
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
	case errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT):
		rep.Gone = append(rep.Gone, r.String())
	default:
		rep.Kept = append(rep.Kept, fmt.Sprintf("%s: delete failed: %v", r, err))
		return fmt.Errorf("failed to delete %s: %w", r, err)
	}
	return nil
}

func reapRule(r Rule, recorded State, live liveState, claimed func(string) bool, rep *Report) error {
	if !has(live.rules, r, sameRule) {
		for _, l := range live.rules {
			if l.Family == r.Family && l.Src == r.Src && l.Dst == r.Dst {
				rep.Kept = append(rep.Kept, fmt.Sprintf("%s: changed since ADD, now %s", r, l))
				return nil
			}
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
	if l, ok := foreignRoute(r.PodIP, recorded, live); ok {
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
	case errors.Is(err, unix.ENOENT):
		rep.Gone = append(rep.Gone, r.String())
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
func foreignRoute(ip string, recorded State, live liveState) (Route, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return Route{}, false
	}
	dst := netip.PrefixFrom(a, a.BitLen()).String()
	for _, l := range live.routes {
		if l.Dst == dst && !has(recorded.Routes, l, sameRoute) {
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
