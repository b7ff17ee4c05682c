package guard

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/podroute"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/rescue"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
)

// reapGone removes what a record says the attachment owns on the host, for
// an attachment whose netns is gone (unreachable through the runtime's
// path). Every object is verified first. claimed tells which pod IPs another
// live attachment holds (their routes and rules are kept); nil leaves the
// routing state to the caller (GC reaps it for all stale records at once).
// It returns nil when nothing is left to retry, else the record trimmed to
// what failed for a reason other than identity (kept for a later DEL or GC).
func (p *Plugin) reapGone(log *slog.Logger, nl *netlink.Handle, rec *record.Record, claimed func(string) bool) *record.Record {
	if rec.Pin != nil {
		p.rescue(log, rec) // clears rec.Pin once the pin is removed
	}
	rec.HostLinks = reapLinks(log, nl, rec.HostLinks)
	if claimed != nil && !rec.Routing.Empty() {
		rep, err := podroute.Reap(rec.Routing, claimed)
		logRouting(log, rep)
		if err != nil {
			log.Error("pod-IP routing state not fully reaped", "err", err)
		}
	}
	if len(rec.HostLinks) > 0 || rec.Pin != nil {
		// Kept for a later DEL or GC: links that failed, or a pin that
		// could not be removed (it must not outlive the record).
		rec.Routing = podroute.State{} // reaped, or logged as kept
		return rec
	}
	return nil
}

// rescue enters the netns through the pin (if the pin still holds the
// recorded netns) and cleans up from the inside: the pod's virtual
// interfaces are deleted, devices moved into it go back to the host. Then
// the pin is removed: it must never outlive DEL or GC of its attachment.
func (p *Plugin) rescue(log *slog.Logger, rec *record.Record) {
	pinLog := log.With("pin", rec.Pin.Path)
	n, err := nspin.Open(*rec.Pin)
	if err != nil {
		pinLog.Warn("pin not usable: host-side reaping only", "err", err)
	} else {
		rep, err := rescue.Rescue(n, rec.Interfaces, rescue.Options{GSSFlagPath: p.GSSFlagPath})
		n.Close()
		for _, c := range rep.Deleted {
			pinLog.Info("deleted pod interface from inside the leaked netns", "iface", c.Name)
		}
		for _, r := range rep.Returned {
			pinLog.Info("returned device to the host", "iface", r.Iface.Name, "hostName", r.Name, "renamed", r.Renamed, "reason", r.Reason)
		}
		for _, name := range rep.Gone {
			pinLog.Debug("pod interface already gone", "iface", name)
		}
		for _, why := range rep.Skipped {
			pinLog.Warn("pod interface left alone", "reason", why)
		}
		if rep.GSSProxyArmed {
			rec.GSSProxyArmed = true
			pinLog.Warn("gss-proxy armed auth_rpcgss in this netns: the kernel will never free it")
		}
		if err != nil {
			pinLog.Error("rescue incomplete", "err", err)
		}
	}
	removePin(pinLog, rec)
}

// removePin removes the record's pin and clears rec.Pin, reporting whether
// it is gone. A pin path that now holds another netns is not ours to
// unmount, and ours is no longer pinned there: it counts as gone. Any other
// failure keeps rec.Pin, so that the record, and GC with it, retries.
func removePin(log *slog.Logger, rec *record.Record) bool {
	err := nspin.Remove(*rec.Pin)
	var replaced *nspin.ReplacedError
	switch {
	case errors.As(err, &replaced):
		log.Warn("pin path holds another netns; left alone", "err", err)
	case err != nil:
		log.Error("pin not removed; record kept", "err", err)
		return false
	}
	rec.Pin = nil
	return true
}

// otherClaims returns a lazily built test for "another live attachment's
// record holds this IP": those IPs' routes and rules are not ours to delete.
// Other attachments' records are read without their locks, so through a
// read-only view: a bad one is skipped, never moved aside under its DEL.
func otherClaims(st *store.Store, self record.Key) func(ip string) bool {
	var claimed map[string]bool
	return func(ip string) bool {
		if claimed == nil {
			claimed = map[string]bool{}
			recs, _, _ := st.ReadOnly().Entries()
			for _, e := range recs {
				if e.Record.Key == self {
					continue
				}
				addIPs(claimed, e.Record.IPs)
			}
		}
		return claimed[ip]
	}
}

// addIPs adds the addresses of CNI IP strings ("10.0.0.5/24" or a bare
// address), in canonical form, to set.
func addIPs(set map[string]bool, ips []string) {
	for _, c := range ips {
		if a, err := netip.ParsePrefix(c); err == nil {
			set[a.Addr().String()] = true
		} else if a, err := netip.ParseAddr(c); err == nil {
			set[a.String()] = true
		}
	}
}

func logRouting(log *slog.Logger, rep podroute.Report) {
	for _, d := range rep.Deleted {
		log.Info("reaped pod-IP routing state", "object", d)
	}
	for _, k := range rep.Kept {
		log.Warn("pod-IP routing state left alone", "object", k)
	}
}

// reapLinks deletes every recorded link that is still provably the pod's and
// returns those that failed for a reason other than identity (to retry
// later). Links that are gone or no longer match are dropped: they are not
// the pod's any more.
func reapLinks(log *slog.Logger, nl *netlink.Handle, links []podlink.Identity) []podlink.Identity {
	var failed []podlink.Identity
	for _, id := range links {
		deleted, err := podlink.ReapWith(nl, id)
		var mm *podlink.MismatchError
		switch {
		case errors.As(err, &mm):
			log.Warn("host link left alone: not the recorded one", "link", id.String(), "reason", mm.Error())
		case err != nil:
			log.Error("host link not reaped", "link", id.String(), "err", err)
			failed = append(failed, id)
		case deleted:
			log.Info("reaped host link of gone netns", "link", id.String())
		default:
			log.Debug("host link already gone", "link", id.String())
		}
	}
	return failed
}

// tombstone keeps the host-link identities of an attachment whose DEL left
// the host side to the main plugin, so that GC and the scan can still reap
// them should the netns leak after all, and keeps the record of a doomed
// netns (gss-proxy armed) for the boot: the scan and the agent count it. It
// reports whether the record was moved (else the caller removes it).
// wrapped: the main plugin's DEL already ran, so only links that remain
// need a tombstone.
func (p *Plugin) tombstone(log *slog.Logger, st *store.Store, rec *record.Record, wrapped bool) bool {
	keep := rec.GSSProxyArmed || len(rec.HostLinks) > 0
	if wrapped && !rec.GSSProxyArmed {
		remain, err := podlink.Remains(nil, rec.HostLinks)
		keep = remain || err != nil
	}
	if !keep {
		return false
	}
	if rec.GSSProxyArmed {
		if err := st.Save(rec); err != nil {
			log.Error("cannot record the doomed netns", "err", err)
		}
	}
	path, err := st.Tombstone(rec.Key)
	if err != nil {
		log.Error("cannot keep tombstone", "err", err)
		return false
	}
	log.Debug("tombstone kept", "path", path)
	sweepTombstones(log, st, path)
	return true
}

// A DEL sweeps only once tombstones pile up (GC is the regular collector),
// and then looks at a bounded window at a random place: the cost of a DEL
// does not grow with the number of tombstones, and tombstones whose links
// live on cannot keep the sweep from the others.
const (
	sweepAbove = 32
	sweepMax   = 8
)

// sweepTombstones drops tombstones whose links are all gone (the main
// plugin cleaned up, or the kernel freed the netns). It keeps their number
// near the number of DELs in flight, so it stays cheap. Tombstones with links
// left are for GC and the scan, which can tell whether their netns leaked.
func sweepTombstones(log *slog.Logger, st *store.Store, skip string) {
	tombs, problems := st.SweepWindow(sweepAbove, sweepMax, rand.IntN)
	for _, err := range problems {
		log.Warn("tombstone discarded", "reason", err)
	}
	for _, t := range tombs {
		if t.Path == skip {
			continue
		}
		if spent, _, _ := tombstoneSpent(nil, t.Record); !spent {
			continue
		}
		if err := st.RemoveFile(t.Path); err != nil {
			log.Warn("cannot drop tombstone", "path", t.Path, "err", err)
		}
	}
}

// tombstoneSpent is the one rule for dropping a tombstone (DEL's sweep, a
// repeated DEL, GC): none of its host links remains as recorded, and its
// netns is not doomed (a doomed netns's tombstone is kept for the boot: the
// scan and the agent count it). It also says whether links remain (GC reaps
// them once the netns leaked): it returns spent, then remain. A failed
// look-up is an error and keeps the tombstone.
func tombstoneSpent(nl *netlink.Handle, t *record.Record) (bool, bool, error) {
	remain, err := podlink.Remains(nl, t.HostLinks)
	return err == nil && !remain && !t.GSSProxyArmed, remain, err
}
