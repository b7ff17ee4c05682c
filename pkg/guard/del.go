package guard

import (
	"errors"
	"log/slog"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/leakguard/leakguard/pkg/hostlink"
	"github.com/leakguard/leakguard/pkg/nsident"
	"github.com/leakguard/leakguard/pkg/store"
)

// Del removes the attachment's host side when its netns is gone, after
// proving each link is the recorded one, then forgets the record. It runs
// first in a chain's DEL: it fails only transiently (lock timeout, code 11),
// never because something is missing, so the main plugin's DEL always runs.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	inv, err := p.start("DEL", args)
	if err != nil {
		return err
	}
	defer inv.closeLog()
	st, lock, err := p.lock(inv)
	if err != nil {
		if isTryAgain(err) {
			inv.log.Warn("DEL deferred", "err", err)
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
		inv.log.Info("no record: nothing to reap")
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
	case nsident.Gone:
		rec.HostLinks = reap(log, rec.HostLinks)
		if len(rec.HostLinks) > 0 {
			if err := st.Save(rec); err != nil {
				log.Error("cannot keep record of links not reaped", "err", err)
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

// reap deletes every recorded link that is still provably the pod's and
// returns those that failed for a reason other than identity (to retry
// later). Links that are gone or no longer match are dropped: they are not
// the pod's any more.
func reap(log *slog.Logger, links []hostlink.Identity) []hostlink.Identity {
	var failed []hostlink.Identity
	for _, id := range links {
		deleted, err := hostlink.Reap(id)
		var mm *hostlink.MismatchError
		switch {
		case errors.As(err, &mm):
			log.Warn("host link left alone: not the recorded one", "link", id.String(), "reason", mm.Error())
		case err != nil:
			log.Error("host link not reaped", "link", id.String(), "err", err)
			failed = append(failed, id)
		case deleted:
			log.Info("reaped host link of gone netns", "link", id.String())
		default:
			log.Info("host link already gone", "link", id.String())
		}
	}
	return failed
}
