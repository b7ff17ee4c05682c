package guard

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/podroute"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
)

// Reachability answers whether a netns can still be reached from userspace
// (a process or thread in it, an nsfs mount, an open nsfs fd), not counting
// leakguard's own pins. A netns reachable by nothing that still has links
// pointing into it has leaked.
type Reachability interface {
	Reachable(id nsident.Identity) bool
	// NSIDReachable tells whether the netns the host knows as nsid (a host
	// link's link-netnsid) is reachable.
	NSIDReachable(nsid int) (bool, error)
}

// staleTempAge is how old a temp file of a tombstone rewrite must be before
// GC takes it for the leftover of a killed writer (a live write lasts
// microseconds; record temp files are judged under their lock instead).
const staleTempAge = 10 * time.Minute

// GC (CNI 1.1.0) reaps, for this network, every record not in the runtime's
// list of valid attachments as a DEL with the netns gone would, and drops
// tombstones whose links are gone. Without a list (cnitool gc sends none)
// nothing is presumed stale: only attachments whose netns is provably
// orphaned (reachable by nothing, not at its recorded path) are reaped.
// It goes on past errors and reports them all; each attachment is locked
// while it is handled, so GC never races ADD or DEL of the same one.
// Wrapping a delegate, the delegate's GC (with the same list) runs first and
// errors of both are reported.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	return p.run("GC", args, func(inv *invocation, args *skel.CmdArgs) error {
		return joinErrors(p.forward(inv, "GC", args), p.gc(inv, args))
	})
}

func (p *Plugin) gc(inv *invocation, _ *skel.CmdArgs) error {
	st, err := store.Open(inv.conf.StateDir)
	if err != nil {
		return fmt.Errorf("open state dir %s: %w", inv.conf.StateDir, err)
	}
	valid, listed := inv.conf.GCList()
	recs, tombs, problems := st.Entries()
	for _, e := range problems {
		inv.log.Warn("GC: state entry discarded", "reason", e)
	}
	reach := p.reachability(inv)
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("netlink unusable: %v", err), "")
	}
	defer nl.Close()

	var (
		errs     []error
		reaped   = map[record.Key]bool{}
		routings []podroute.State
	)
	for _, e := range recs {
		r := e.Record
		if r.Network != inv.conf.Name {
			continue
		}
		if listed {
			if valid[types.GCAttachment{ContainerID: r.ContainerID, IfName: r.IfName}] {
				continue
			}
		} else if !orphaned(reach, r) {
			continue
		}
		done, routing, err := p.gcRecord(inv, nl, st, r, !listed, reach)
		if err != nil {
			errs = append(errs, err)
		}
		if done {
			reaped[r.Key] = true
			if p.GCReaped != nil {
				p.GCReaped(r.Key)
			}
		}
		if !routing.Empty() {
			routings = append(routings, routing)
		}
	}
	errs = append(errs, gcRouting(inv.log, routings, recs, reaped)...)
	for _, e := range tombs {
		if e.Record.Network == inv.conf.Name {
			if err := p.gcTombstone(inv.log, nl, st, e, reach); err != nil {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, p.gcPins(inv, st)...)
	left, lerrs := st.RemoveLeftovers(tombs, staleTempAge)
	errs = append(errs, lerrs...)
	if left.Temps > 0 || left.Locks > 0 {
		inv.log.Info("GC: removed leftovers of finished or interrupted invocations", "tempFiles", left.Temps, "lockFiles", left.Locks)
	}
	inv.log.Info("GC done", "listed", listed, "records", len(recs), "tombstones", len(tombs), "reaped", len(reaped), "errors", len(errs))
	if len(errs) > 0 {
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("GC finished with %d errors", len(errs)), errors.Join(errs...).Error())
	}
	return nil
}

// reachability builds the reachability view, or nil when it is not
// available (then nothing is judged orphaned).
func (p *Plugin) reachability(inv *invocation) Reachability {
	if p.Reach == nil {
		return nil
	}
	r, err := p.Reach(inv.conf.PinDir, inv.log)
	if err != nil {
		inv.log.Warn("netns reachability unknown: nothing judged orphaned", "err", err)
		return nil
	}
	return r
}

// orphaned is true only when the record's netns is provably abandoned: it is
// not at its recorded path and nothing in userspace reaches it.
func orphaned(reach Reachability, r *record.Record) bool {
	if reach == nil || reach.Reachable(r.Netns) {
		return false
	}
	return nsident.Classify(r.NetnsPath, r.Netns).State == nsident.Gone
}

// gcRecord reaps one stale attachment under its lock. listed is the record
// as the directory walk saw it: if the attachment was re-added since (a new
// sandbox under the same key), the record found under the lock is another
// one and is left alone; without a GC list, orphanhood is judged again under
// the lock. It returns the routing state to reap (GC batches it).
func (p *Plugin) gcRecord(inv *invocation, nl *netlink.Handle, st *store.Store, listed *record.Record, recheck bool, reach Reachability) (bool, podroute.State, error) {
	k := listed.Key
	log := inv.log.With("containerID", k.ContainerID, "ifname", k.IfName)
	l, err := st.Lock(k, p.LockTimeout)
	if err != nil {
		return false, podroute.State{}, fmt.Errorf("%s: %w", k, err)
	}
	forgotten := false
	defer func() { l.Release(forgotten) }()
	r, err := st.Load(k)
	switch {
	case err != nil || r == nil:
		return false, podroute.State{}, nil
	case r.Netns != listed.Netns || !r.Created.Equal(listed.Created):
		log.Info("GC: attachment re-added since the walk; left alone")
		return false, podroute.State{}, nil
	case recheck && !orphaned(reach, r):
		return false, podroute.State{}, nil
	}
	log.Info("GC: reaping stale attachment")
	routing := r.Routing
	if left := p.reapGone(log, nl, r, nil); left != nil {
		if err := st.Save(left); err != nil {
			return false, routing, fmt.Errorf("%s: keep record of objects not reaped: %w", k, err)
		}
		return false, routing, fmt.Errorf("%s: some host objects could not be reaped", k)
	}
	if err := st.Remove(k); err != nil {
		return false, routing, err
	}
	forgotten = true
	return true, routing, nil
}

// gcRouting reaps the pod-IP routes and rules of all stale attachments with
// one dump of rules and routes; IPs held by records GC keeps are claimed.
func gcRouting(log *slog.Logger, routings []podroute.State, recs []store.Entry, reaped map[record.Key]bool) []error {
	if len(routings) == 0 {
		return nil
	}
	claimed := map[string]bool{}
	for _, e := range recs {
		if !reaped[e.Record.Key] {
			addIPs(claimed, e.Record.IPs)
		}
	}
	reports, err := podroute.ReapMany(routings, func(ip string) bool { return claimed[ip] })
	for _, rep := range reports {
		logRouting(log, rep)
	}
	if err != nil {
		return []error{fmt.Errorf("pod-IP routing state: %w", err)}
	}
	return nil
}

// gcTombstone drops a tombstone whose links are gone, and reaps its links
// when its netns leaked.
func (p *Plugin) gcTombstone(log *slog.Logger, nl *netlink.Handle, st *store.Store, e store.Entry, reach Reachability) error {
	t := e.Record
	spent, remain, err := tombstoneSpent(nl, t)
	switch {
	case err != nil:
		return fmt.Errorf("tombstone %s: %w", e.Path, err)
	case spent:
		return st.RemoveFile(e.Path)
	case !remain:
		return nil // a doomed netns's tombstone, kept for the boot
	}
	if reach == nil || reach.Reachable(t.Netns) {
		return nil // the main plugin can still clean it, or the pod lives on
	}
	log.Info("GC: reaping links of tombstone whose netns leaked", "containerID", t.ContainerID, "path", e.Path)
	if t.HostLinks = reapLinks(log, nl, t.HostLinks); len(t.HostLinks) > 0 {
		if err := st.Rewrite(e.Path, t); err != nil {
			return err
		}
		return fmt.Errorf("tombstone %s: some links could not be reaped", e.Path)
	}
	if t.GSSProxyArmed {
		return st.Rewrite(e.Path, t) // links gone; the doomed netns is kept for the boot
	}
	return st.RemoveFile(e.Path)
}

// gcPins removes pins that no record names (their record was lost, or ADD
// died between pinning and saving). Each is handled under its attachment's
// lock, so a pin of an ADD in flight is never taken for an orphan.
func (p *Plugin) gcPins(inv *invocation, st *store.Store) []error {
	// Only a pin dir inside the state dir (the default) is this store's
	// alone: a pin dir shared by several state dirs holds pins whose records
	// GC cannot see. Their DELs still remove them.
	if rel, err := filepath.Rel(inv.conf.StateDir, inv.conf.PinDir); err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		inv.log.Debug("GC: pin dir outside the state dir; stray pins left to their DELs", "pinDir", inv.conf.PinDir)
		return nil
	}
	ents, err := os.ReadDir(inv.conf.PinDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return []error{fmt.Errorf("read pin dir: %w", err)}
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if nspin.ValidName(name) != nil || st.HasRecordNamed(name) {
			continue
		}
		l, err := st.LockName(name, p.LockTimeout)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !st.HasRecordNamed(name) {
			if removed, err := nspin.RemoveOrphan(inv.conf.PinDir, name); err != nil {
				errs = append(errs, fmt.Errorf("orphan pin %s: %w", name, err))
			} else if removed {
				inv.log.Info("GC: removed netns pin without a record", "pin", name)
			}
		}
		l.Release(!st.HasRecordNamed(name))
	}
	return errs
}
