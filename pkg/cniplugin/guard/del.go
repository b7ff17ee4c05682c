package guard

import (
	"errors"
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
)

// Del removes the attachment's host side when its netns is gone, after
// proving each object is the recorded one, then forgets the record. It runs
// first in a chain's DEL: it fails only transiently (lock timeout, code 11),
// never because something is missing, so the main plugin's DEL always runs.
//
// The steps: classify the netns (nsident) → load the record (store) →
// verify and reap (reapGone) → forget, or keep a tombstone when the main
// plugin still has the host side to clean.
func (p *Plugin) Del(args *skel.CmdArgs) error { return p.run("DEL", args, p.del) }

func (p *Plugin) del(inv *invocation, args *skel.CmdArgs) error {
	st, lock, err := p.lock(inv)
	if err != nil {
		if isTryAgain(err) {
			return err
		}
		inv.log.Error("state unusable; nothing can be reaped", "err", err)
		return nil
	}
	forgotten := false
	defer func() { lock.Release(forgotten) }()

	rec, err := st.Load(inv.key)
	var disc *store.DiscardedError
	switch {
	case errors.As(err, &disc):
		inv.log.Warn("record not acted upon", "reason", disc.Error())
	case err != nil:
		inv.log.Error("cannot read record; leaving it for a later DEL", "err", err)
		return nil
	}
	if rec == nil {
		p.removeOrphanPin(inv)
		p.reapUnrecorded(inv, args.Netns)
		forgotten = true
		return nil
	}

	v := nsident.Classify(args.Netns, rec.Netns)
	log := inv.log.With("netns", v.State.String(), "netnsReason", v.Reason)
	switch v.State {
	case nsident.Unknown:
		log.Warn("netns cannot be examined: leaving host side and record")
		return nil
	case nsident.Alive:
		log.Info("netns alive: host side left to the main plugin")
		if rec.Pin != nil && !removePin(log.With("pin", rec.Pin.Path), rec) {
			return nil // the record is what lets GC remove the pin later
		}
		if p.tombstone(log, st, rec) {
			forgotten = true
			return nil
		}
	case nsident.Gone:
		if left := p.reapGone(log, nil, rec, otherClaims(st, rec.Key)); left != nil {
			if err := st.Save(left); err != nil {
				log.Error("cannot keep record of objects not reaped", "err", err)
			}
			return nil
		}
	}
	if err := st.Remove(inv.key); err != nil {
		log.Error("cannot remove record", "err", err)
		return nil
	}
	forgotten = true
	return nil
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
