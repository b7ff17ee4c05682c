package guard

import (
	"errors"
	"log/slog"
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
)

// Del removes the attachment's host side when its netns is gone, after
// proving each object is the recorded one, then forgets the record.
//
// Chained, it runs first in the chain's DEL: it fails only transiently (lock
// timeout, code 11), never because something is missing, so the main
// plugin's DEL always runs. Wrapping a delegate, it decides what the main
// plugin's DEL sees: the runtime's CNI_NETNS when the netns is alive, the pin
// when the netns is gone but pinned (the main plugin's complete teardown),
// else none; and it returns the main plugin's error, keeping the record so
// that the retry runs the main plugin again.
//
// The steps: load the record (store) → classify the netns (nsident) → the
// main plugin's DEL (wrapper mode) → verify and reap (reapGone) → forget, or
// keep a tombstone when the main plugin still has the host side to clean or
// the netns is doomed.
func (p *Plugin) Del(args *skel.CmdArgs) error { return p.run("DEL", args, p.del) }

func (p *Plugin) del(inv *invocation, args *skel.CmdArgs) error {
	st, lock, err := p.lock(inv)
	if err != nil {
		if isTryAgain(err) {
			return err
		}
		inv.log.Error("state unusable; nothing can be reaped", "err", err)
		return p.delegateUnrecorded(inv, nil, args)
	}
	forgotten := false
	defer func() { lock.Release(forgotten) }()
	if removed, err := st.RemoveTemp(inv.key); err != nil {
		inv.log.Warn("leftover temp file not removed", "err", err)
	} else if removed {
		inv.log.Info("removed temp file of an interrupted record write")
	}

	rec, err := st.Load(inv.key)
	var disc *store.DiscardedError
	switch {
	case errors.As(err, &disc):
		inv.log.Warn("record not acted upon", "kind", disc.Kind.String(), "reason", disc.Error())
	case err != nil:
		inv.log.Error("cannot read record; leaving it for a later DEL", "err", err)
		return p.delegateUnrecorded(inv, st, args)
	}
	if rec == nil {
		if err := p.delegateUnrecorded(inv, st, args); err != nil {
			return err
		}
		p.removeOrphanPin(inv)
		p.reapUnrecorded(inv, args.Netns)
		dropOwnTombstones(inv.log, st, inv.key)
		forgotten = true
		return nil
	}

	w := p.delegateForDel(inv, args.StdinData, rec)
	v := nsident.Classify(args.Netns, rec.Netns)
	log := inv.log.With("netns", v.State.String(), "netnsReason", v.Reason)
	switch v.State {
	case nsident.Unknown:
		log.Warn("netns cannot be examined: leaving host side and record")
		if w != nil {
			return p.delegateDel(log, w, "") // its IP release needs no netns
		}
		return nil
	case nsident.Alive:
		return p.delAlive(log, st, rec, w, args.Netns, &forgotten)
	}
	var derr error
	if w != nil {
		pin := usablePin(log, rec)
		if derr = p.delegateDel(log, w, pin); derr != nil && pin != "" {
			// Keep the pin and the pod's interfaces for the retry: the
			// main plugin's teardown learns from them (bridge finds its
			// masquerade rules through the container interface's IPs).
			return derr
		}
	}
	if left := p.reapGone(log, nil, rec, otherClaims(st, rec.Key)); left != nil || derr != nil {
		if left == nil {
			left = rec
		}
		if err := st.Save(left); err != nil {
			log.Error("cannot keep record of objects not reaped", "err", err)
		}
		return derr
	}
	return p.forget(log, st, rec, &forgotten)
}

// delAlive serves a DEL whose netns is the recorded one and alive: the host
// side belongs to the main plugin (chained: it runs next; wrapped: now). The
// doomed check reads whether gss-proxy armed the netns, which the kernel then
// never frees; wrapped, leakguard then evacuates it (virtual interfaces
// deleted, devices returned to the host) so that nothing is stranded there.
func (p *Plugin) delAlive(log *slog.Logger, st *store.Store, rec *record.Record, w *wrapped, netns string, forgotten *bool) error {
	if w != nil {
		if err := p.delegateDel(log, w, netns); err != nil {
			return err // host side and record stay for the retry
		}
	} else {
		log.Info("netns alive: host side left to the main plugin")
	}
	p.checkDoomed(log, rec, netns, w != nil)
	if rec.Pin != nil && !removePin(log.With("pin", rec.Pin.Path), rec) {
		if err := st.Save(rec); err != nil {
			log.Error("cannot update record", "err", err)
		}
		return nil // the record is what lets GC remove the pin later
	}
	if p.tombstone(log, st, rec, w != nil) {
		*forgotten = true
		return nil
	}
	return p.forget(log, st, rec, forgotten)
}

// delegateUnrecorded runs the delegate's DEL, if there is one, for an
// attachment without a usable record: with the runtime's CNI_NETNS only when
// it provably is no one else's netns (unrecordedNetns), else none.
func (p *Plugin) delegateUnrecorded(inv *invocation, st *store.Store, args *skel.CmdArgs) error {
	w := p.delegateForDel(inv, args.StdinData, nil)
	if w == nil {
		return nil
	}
	return p.delegateDel(inv.log, w, unrecordedNetns(inv.log, st, inv.key, args.Netns))
}

// forget removes the attachment's record.
func (p *Plugin) forget(log *slog.Logger, st *store.Store, rec *record.Record, forgotten *bool) error {
	if err := st.Remove(rec.Key); err != nil {
		log.Error("cannot remove record", "err", err)
		return nil
	}
	*forgotten = true
	return nil
}

// dropOwnTombstones serves a repeated DEL of an attachment whose earlier DEL
// left the host side to the main plugin (containerd's RemovePodSandbox after
// StopPodSandbox): the tombstones of this key whose links are all gone are
// dropped now, rather than left for GC, which containerd never runs, or for
// the bounded sweep. The sweep's rules apply: a tombstone whose links remain
// (or cannot be checked) is kept for GC and the scan, the netns may have
// leaked after all; a doomed netns's is kept for the boot.
func dropOwnTombstones(log *slog.Logger, st *store.Store, k record.Key) {
	tombs, problems := st.TombstonesOf(k)
	for _, err := range problems {
		log.Warn("tombstone discarded", "reason", err)
	}
	for _, t := range tombs {
		if spent, _, err := tombstoneSpent(nil, t.Record); !spent {
			log.Info("tombstone kept: its host links remain or its netns is doomed", "path", t.Path, "err", err)
			continue
		}
		if err := st.RemoveFile(t.Path); err != nil {
			log.Warn("cannot drop tombstone", "path", t.Path, "err", err)
			continue
		}
		log.Debug("tombstone dropped: its host links are gone", "path", t.Path)
	}
}

// removeOrphanPin removes a pin left without a record (the record was lost or
// corrupt, or ADD died between pinning and saving): a pin must never outlive
// DEL of its attachment.
func (p *Plugin) removeOrphanPin(inv *invocation) {
	removed, err := nspin.RemoveOrphan(inv.conf.PinDir, inv.key.Name())
	switch {
	case err != nil && !errors.Is(err, os.ErrNotExist):
		inv.log.Warn("orphan netns pin not removed", "err", err)
	case removed:
		inv.log.Info("removed netns pin left without a record")
	}
}
