package guard

import (
	"errors"
	"os"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

// reapUnrecorded serves a DEL for an attachment leakguard holds no record of
// (ADD ran before leakguard was installed, or the record was lost). When the
// netns path no longer holds a netns, each host interface named in
// prevResult is reaped only if it proves to be the pod's without a record:
// same name and MAC, a veth, its peer in another netns (link-netnsid), and
// that netns reachable by no process, thread, mount or fd. Anything less is
// left alone.
func (p *Plugin) reapUnrecorded(inv *invocation, netns string) {
	if inv.conf.PrevResult == nil {
		return
	}
	if netns != "" {
		_, err := nsident.OfPath(netns)
		if err == nil {
			inv.log.Info("no record; netns path holds a netns: left to the main plugin")
			return
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, nsident.ErrNotNetns) {
			inv.log.Warn("no record; netns path cannot be examined: nothing reaped", "err", err)
			return
		}
	}
	prev, err := current.NewResultFromResult(inv.conf.PrevResult)
	if err != nil {
		inv.log.Warn("no record; prevResult unusable: nothing reaped", "err", err)
		return
	}
	var reach Reachability
	for _, i := range prev.Interfaces {
		if i == nil || i.Sandbox != "" || i.Mac == "" {
			continue
		}
		id, why := unrecordedCandidate(i)
		if why != "" {
			inv.log.Debug("no record; host interface left alone", "iface", i.Name, "reason", why)
			continue
		}
		if reach == nil {
			if reach = p.reachability(inv); reach == nil {
				return
			}
		}
		if ok, err := reach.NSIDReachable(id.NetNSID); err != nil || ok {
			inv.log.Info("no record; host veth left alone: its peer netns is reachable or unknown", "link", id.String(), "err", err)
			continue
		}
		reapLinks(inv.log, nil, []podlink.Identity{id})
	}
}

// unrecordedCandidate reads the named host link and builds its identity, or
// says why it cannot be the pod's.
func unrecordedCandidate(i *current.Interface) (podlink.Identity, string) {
	l, err := netlinksafe.LinkByName(i.Name)
	if err != nil {
		return podlink.Identity{}, "not found on the host"
	}
	id := podlink.HostIdentity(l)
	switch {
	case id.Kind != "veth":
		return podlink.Identity{}, "not a veth (" + id.Kind + ")"
	case !podlink.SameMAC(id.MAC, i.Mac):
		return podlink.Identity{}, "MAC " + id.MAC + ", prevResult says " + i.Mac
	case id.NetNSID < 0:
		return podlink.Identity{}, "its peer is in the host netns"
	}
	return id, ""
}
