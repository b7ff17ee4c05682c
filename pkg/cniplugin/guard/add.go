package guard

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/podroute"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
)

// Add records what the attachment owns on the host and passes prevResult
// through unchanged, in the config's cniVersion.
func (p *Plugin) Add(args *skel.CmdArgs) error { return p.run("ADD", args, p.add) }

// add gets the attachment's result (prevResult when chained, the delegate's
// ADD when wrapping), records what the attachment owns on the host, and
// prints the result unchanged in the config's cniVersion. In wrapper mode a
// failure to record undoes the delegate's ADD with its DEL.
func (p *Plugin) add(inv *invocation, args *skel.CmdArgs) error {
	result := inv.conf.PrevResult
	var w *wrapped
	if inv.conf.Delegate != nil {
		var err error
		if w, err = p.renderDelegate(inv, args.StdinData); err != nil {
			return err
		}
		if result, err = p.runner().Add(context.Background(), w.typ, w.stdin, args.Netns); err != nil {
			return err // the main plugin's own error, as it gave it
		}
	} else if result == nil {
		return types.NewError(types.ErrInvalidNetworkConfig,
			"leakguard must be chained after the plugin that creates the interface (or wrap it with \"delegate\"): no prevResult", "")
	}
	err := p.record(inv, args, result, w)
	if err != nil && w != nil {
		if derr := p.delegateDel(inv.log, w, args.Netns); derr != nil {
			err = fmt.Errorf("%w (undoing the main plugin's ADD failed too: %v)", err, derr)
		}
	}
	if err != nil {
		return err
	}
	return types.PrintResult(result, inv.conf.CNIVersion)
}

// record observes the attachment, pins its netns if asked, and saves the
// record under the attachment's lock.
func (p *Plugin) record(inv *invocation, args *skel.CmdArgs, result types.Result, w *wrapped) error {
	prev, err := current.NewResultFromResult(result)
	if err != nil {
		return fmt.Errorf("convert result: %w", err)
	}
	rec, err := p.observe(inv, args, prev)
	if err != nil {
		return err
	}
	if w != nil {
		rec.Delegate = w.stdin
	}
	st, lock, err := p.lock(inv)
	if err != nil {
		return err
	}
	defer lock.Release(false)
	if inv.conf.PinNetns {
		if err := pin(inv, args.Netns, rec); err != nil {
			return err
		}
	} else if removed, err := nspin.RemoveOrphan(inv.conf.PinDir, inv.key.Name()); removed {
		// Pinning was turned off since an earlier ADD of this attachment:
		// the record about to be written no longer names that pin.
		inv.log.Info("removed netns pin of an earlier ADD (pinNetns is off)")
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		inv.log.Warn("netns pin of an earlier ADD not removed", "err", err)
	}
	if err := st.Save(rec); err != nil {
		if rec.Pin != nil {
			_ = nspin.Remove(*rec.Pin) // a pin must not outlive its record
		}
		return fmt.Errorf("save record: %w", err)
	}
	inv.log.Info("recorded attachment", "netns", rec.Netns.String(), "hostLinks", rec.HostLinks, "ips", rec.IPs)
	return nil
}

// observe builds the record: the netns identity, the container interfaces,
// their host-side peers and the pod IPs.
func (p *Plugin) observe(inv *invocation, args *skel.CmdArgs, prev *current.Result) (*record.Record, error) {
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return nil, fmt.Errorf("open netns %q: %w", args.Netns, err)
	}
	defer podNS.Close()
	podID, err := nsident.OfFd(podNS.Fd())
	if err != nil {
		return nil, fmt.Errorf("identify netns %q: %w", args.Netns, err)
	}
	hostID, err := nsident.Current()
	if err != nil {
		return nil, fmt.Errorf("identify host netns: %w", err)
	}
	now := time.Now().UTC()
	rec := &record.Record{Key: inv.key, Created: now, Updated: now, Netns: podID, NetnsPath: args.Netns}
	for _, ip := range prev.IPs {
		rec.IPs = append(rec.IPs, ip.Address.String())
	}
	if podID == hostID {
		inv.log.Info("container shares the host netns: no host links to record")
		return rec, nil
	}
	d, err := podlink.Discover(podNS, args.IfName, containerIfnames(args.IfName, prev), p.Classify)
	if err != nil {
		return nil, err
	}
	for _, why := range d.Skipped {
		inv.log.Debug("no host link recorded", "reason", why)
	}
	rec.Interfaces, rec.HostLinks = d.Container, d.Host
	if rec.Routing, err = podroute.Snapshot(rec.IPs); err != nil {
		inv.log.Warn("pod-IP routes and rules not recorded", "err", err)
	}
	return rec, nil
}

// pin bind-mounts the pod netns for rescue at DEL, and proves the pin holds
// the netns just recorded.
func pin(inv *invocation, netns string, rec *record.Record) error {
	pin, err := nspin.New(netns, inv.conf.PinDir, inv.key.Name())
	if err != nil {
		return fmt.Errorf("pin netns %s under %s: %w", netns, inv.conf.PinDir, err)
	}
	if pin.Netns != rec.Netns {
		_ = nspin.Remove(pin)
		return fmt.Errorf("pinned netns %s is not the recorded %s", pin.Netns, rec.Netns)
	}
	rec.Pin = &pin
	return nil
}

// containerIfnames lists CNI_IFNAME and every prevResult interface placed in
// a sandbox. Results below 0.3.0 carry no interfaces: CNI_IFNAME alone.
func containerIfnames(ifname string, prev *current.Result) []string {
	names := []string{ifname}
	seen := map[string]bool{ifname: true}
	for _, i := range prev.Interfaces {
		if i != nil && i.Sandbox != "" && !seen[i.Name] {
			seen[i.Name] = true
			names = append(names, i.Name)
		}
	}
	return names
}
