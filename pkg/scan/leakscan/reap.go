package leakscan

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
)

// ReapOptions tunes Reap.
type ReapOptions struct {
	// AllOrphans also deletes leaked host links no leakguard record or
	// tombstone owns; by default they are only reported.
	AllOrphans bool
	// DryRun decides and verifies but deletes nothing.
	DryRun bool
	// Store holds the owners of the leaks; required for owned leaks.
	Store *store.Store
	// LockTimeout bounds the wait for an attachment's lock (a concurrent
	// ADD/DEL/GC of it); 0 means 10s.
	LockTimeout time.Duration
}

// Actions of a ReapResult.
const (
	ActionDeleted     = "deleted"      // the host link was deleted
	ActionWouldDelete = "would-delete" // dry run: it would have been
	ActionSkipped     = "skipped"      // left alone on purpose (Reason)
	ActionGone        = "gone"         // already gone
	ActionFailed      = "failed"       // an error (Reason); see Reap's error
)

// ReapResult is what Reap did with one leak. Its JSON names are stable.
type ReapResult struct {
	Leak
	Action string `json:"action"`
	Reason string `json:"reason,omitempty"`
	// StateFileRemoved is the owner's record or tombstone file, removed
	// because none of its host links is left.
	StateFileRemoved string `json:"stateFileRemoved,omitempty"`
}

// Reap deletes leaked host links found by Scan, each only after proving it is
// still the same link: ifindex, name, MAC, kind, link-netnsid and peer
// ifindex. An owned leak is verified against its recorded identity under the
// attachment's lock, and the owner's state file is dropped once none of its
// host links is left (unless it holds a netns pin, which DEL or GC undo). It
// must run in the host netns. Every leak gets a result; the error joins all
// failures.
func Reap(leaks []Leak, opts ReapOptions) ([]ReapResult, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = 10 * time.Second
	}
	var errs []error
	out := make([]ReapResult, 0, len(leaks))
	for _, l := range leaks {
		var r ReapResult
		var err error
		if l.Owner != nil {
			r, err = reapOwned(l, opts)
		} else {
			r, err = reapOrphan(l, opts)
		}
		if err != nil {
			r.Action, r.Reason = ActionFailed, err.Error()
			errs = append(errs, fmt.Errorf("%s (ifindex %d): %w", l.HostLink, l.Ifindex, err))
		}
		r.Leak = l
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

func reapOrphan(l Leak, opts ReapOptions) (ReapResult, error) {
	if !opts.AllOrphans {
		return ReapResult{Action: ActionSkipped, Reason: "no leakguard record owns it (--all-orphans to include)"}, nil
	}
	id := podlink.Identity{
		Name: l.HostLink, Index: l.Ifindex, MAC: l.MAC, Kind: l.Kind,
		NetNSID: l.NSID, PeerIndex: l.PeerIfindex,
	}
	link, r, err := verify(id)
	if link == nil || err != nil {
		return r, err
	}
	// podlink checks the link-netnsid of veths only; an orphan may be of
	// any kind that points into another netns.
	if got := link.Attrs().NetNsID; got != id.NetNSID {
		return ReapResult{Action: ActionSkipped, Reason: fmt.Sprintf("not the scanned link: link-netnsid %d, scanned %d", got, id.NetNSID)}, nil
	}
	if opts.DryRun {
		return ReapResult{Action: ActionWouldDelete}, nil
	}
	if err := netlink.LinkDel(link); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return ReapResult{Action: ActionGone}, nil
		}
		return ReapResult{}, fmt.Errorf("delete %s: %w", id, err)
	}
	return ReapResult{Action: ActionDeleted}, nil
}

// verify returns the link when it is still id; otherwise a result saying
// why not (and a nil link).
func verify(id podlink.Identity) (netlink.Link, ReapResult, error) {
	link, err := podlink.Verify(id)
	var mm *podlink.MismatchError
	switch {
	case errors.Is(err, podlink.ErrGone):
		return nil, ReapResult{Action: ActionGone}, nil
	case errors.As(err, &mm):
		return nil, ReapResult{Action: ActionSkipped, Reason: "not the same link any more: " + strings.Join(mm.Reasons, "; ")}, nil
	case err != nil:
		return nil, ReapResult{}, err
	}
	return link, ReapResult{}, nil
}

func reapOwned(l Leak, opts ReapOptions) (ReapResult, error) {
	if opts.Store == nil {
		return ReapResult{}, errors.New("owned by a leakguard record, but no state dir was given")
	}
	o := l.Owner
	rec := o.recorded
	id, ok := recordedLink(rec, l)
	if !ok {
		return ReapResult{}, fmt.Errorf("%s %s does not list this link", o.Kind, o.File)
	}
	lock, err := opts.Store.Lock(rec.Key, opts.LockTimeout)
	if err != nil {
		return ReapResult{}, fmt.Errorf("lock attachment %s: %w", rec.Key, err)
	}
	// Leave no lock file behind for an attachment without a live record
	// (reaping a tombstone after its DEL).
	defer func() { lock.Release(!opts.Store.HasRecordNamed(rec.Key.Name())) }()
	if _, err := os.Stat(o.File); errors.Is(err, os.ErrNotExist) {
		return ReapResult{Action: ActionSkipped, Reason: fmt.Sprintf("%s %s vanished meanwhile (DEL or GC ran)", o.Kind, o.File)}, nil
	}
	if opts.DryRun {
		if link, r, err := verify(id); link == nil || err != nil {
			return r, err
		}
		return ReapResult{Action: ActionWouldDelete}, nil
	}
	r := ReapResult{Action: ActionDeleted}
	deleted, err := podlink.Reap(id)
	var mm *podlink.MismatchError
	switch {
	case errors.As(err, &mm):
		return ReapResult{Action: ActionSkipped, Reason: "not the recorded link any more: " + strings.Join(mm.Reasons, "; ")}, nil
	case err != nil:
		return ReapResult{}, err
	case !deleted:
		r.Action = ActionGone
	}
	removed, why, err := dropIfEmpty(opts.Store, o, rec)
	if err != nil {
		return r, err
	}
	if removed {
		r.StateFileRemoved = o.File
	} else if why != "" {
		r.Reason = why
	}
	return r, nil
}

// recordedLink returns the identity rec recorded for the scanned link.
func recordedLink(rec record.Record, l Leak) (podlink.Identity, bool) {
	for _, h := range rec.HostLinks {
		if len(podlink.Compare(h, l.identity())) == 0 {
			return h, true
		}
	}
	return podlink.Identity{}, false
}

// dropIfEmpty removes a tombstone once none of its host links exists. A live
// record is never removed here: its DEL or GC still has work only they do
// (pod-IP routes and rules, the netns pin, the lock).
func dropIfEmpty(st *store.Store, o *Owner, rec record.Record) (bool, string, error) {
	file := o.File
	if o.Kind != "tombstone" {
		return false, "record kept: DEL or GC of the attachment finishes its cleanup (routes, rules, pin)", nil
	}
	remain, err := podlink.Remains(nil, rec.HostLinks)
	if err != nil {
		return false, "", fmt.Errorf("%s: %w", file, err)
	}
	if remain {
		return false, "state file kept: one of its host links still exists as recorded", nil
	}
	if rec.GSSProxyArmed {
		return false, "tombstone kept: its netns is doomed (gss-proxy armed), counted for the boot", nil
	}
	if rec.Pin != nil {
		return false, fmt.Sprintf("record kept: it holds the netns pin %s, which DEL or GC removes", rec.Pin.Path), nil
	}
	if err := st.RemoveFile(file); err != nil {
		return false, "", err
	}
	return true, "", nil
}
