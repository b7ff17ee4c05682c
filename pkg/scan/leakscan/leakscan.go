// Package leakscan finds leaked network namespaces on a node: host links
// whose link-netnsid names a netns that no process, thread, nsfs mount or
// nsfs fd reaches any more (pkg/nsreach). Such a netns can never be entered
// again; only a kernel reference keeps it (the auth_rpcgss bug), together with
// everything inside it. The scan says which leakguard record or tombstone
// owns each leaked host link, and Reap deletes them under the identity rules
// of DEL (pkg/podlink).
package leakscan

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/netns/nsreach"
)

// DefaultRecheck is how long a candidate must stay unreachable before it is
// called leaked: netns teardown is asynchronous, and a pod being created or
// deleted passes through states that look like a leak for an instant.
const DefaultRecheck = 200 * time.Millisecond

// Options tunes Scan. The zero value scans /proc with the default recheck
// and no ownership information.
type Options struct {
	// ProcRoot is where procfs is mounted; "" means /proc.
	ProcRoot string
	// IgnoreMountsUnder: nsfs mounts there do not make a netns reachable
	// (leakguard's pin directory, so abandoned pins are found).
	IgnoreMountsUnder []string
	// Recheck is the delay before candidates are checked again; 0 means
	// DefaultRecheck, a negative value skips the re-check.
	Recheck time.Duration
	// Store, when set, is searched for the record or tombstone owning each
	// leaked host link.
	Store *store.Store
	// SlabInfo is the slabinfo file; "" means <ProcRoot>/slabinfo.
	SlabInfo string
}

// Report is the outcome of one scan. Its JSON field names are stable.
type Report struct {
	// Time is when the scan finished.
	Time time.Time `json:"time"`
	// DurationSeconds is the scan's wall time, re-check delay included.
	DurationSeconds float64 `json:"durationSeconds"`
	// HostNetns is the netns whose links were scanned.
	HostNetns nsident.Identity `json:"hostNetns"`
	// ReachableNetns counts the namespaces reachable from userspace.
	ReachableNetns int `json:"reachableNetns"`
	// LeakedNetns counts the distinct nsids among Leaks.
	LeakedNetns int `json:"leakedNetns"`
	// Leaks lists every leaked host link, by nsid then ifindex.
	Leaks []Leak `json:"leaks"`
	// Slab estimates leaked namespaces from the kernel's slab counters,
	// which also counts leaked namespaces that have no host link.
	Slab SlabEstimate `json:"slab"`
	// UnreadableProcesses lists processes whose namespaces could not be
	// inspected: a netns held only by one of them is reported as leaked.
	UnreadableProcesses []int `json:"unreadableProcesses,omitempty"`
	// Discarded are the record and tombstone files of Store that were not
	// used (corrupt, of another boot, too large, not regular files).
	Discarded []Discarded `json:"discarded,omitempty"`
	// Warnings are problems met on the way (an unreadable state dir, ...)
	// that did not stop the scan.
	Warnings []string `json:"warnings,omitempty"`
}

// Leak is one host link whose peer netns is unreachable.
type Leak struct {
	HostLink string `json:"hostLink"`
	Ifindex  int    `json:"ifindex"`
	MAC      string `json:"mac"`
	Kind     string `json:"kind"`
	// NSID is the host's nsid of the leaked netns (IFLA_LINK_NETNSID).
	NSID int `json:"nsid"`
	// PeerIfindex is the ifindex of the link's peer (for a veth) or lower
	// device inside the leaked netns.
	PeerIfindex int `json:"peerIfindex"`
	// Owner is the leakguard record or tombstone listing this host link,
	// nil when leakguard never recorded it.
	Owner *Owner `json:"owner"`
	// GSSProxyArmed is set when the owner saw /proc/net/rpc/use-gss-proxy
	// read 1 inside the netns: the auth_rpcgss leak itself.
	GSSProxyArmed bool `json:"gssProxyArmed"`
}

// Owner names the attachment that owns a leaked host link. The pod is
// ContainerID (the sandbox ID).
type Owner struct {
	Network     string `json:"network"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	// Kind is "record" (DEL never ran) or "tombstone" (DEL ran while the
	// netns was alive and left the host side to the main plugin).
	Kind string `json:"kind"`
	// File is the state file holding it.
	File string `json:"file"`

	recorded record.Record
}

// String is network/containerID/ifName.
func (o *Owner) String() string {
	if o == nil {
		return ""
	}
	return record.Key{Network: o.Network, ContainerID: o.ContainerID, IfName: o.IfName}.String()
}

// Scan lists the host links of the calling thread's netns (the host) that
// point into unreachable namespaces. It must run on a thread that stays in
// the host netns (the CLI's main thread; ns.Do in tests).
func Scan(opts Options) (*Report, error) {
	start := time.Now()
	rep := &Report{Leaks: []Leak{}}
	host, err := nsident.Current()
	if err != nil {
		return nil, fmt.Errorf("identify the host netns: %w", err)
	}
	rep.HostNetns = host
	unreadable := map[int]bool{}
	ropts := nsreach.Options{
		ProcRoot:          opts.ProcRoot,
		IgnoreMountsUnder: opts.IgnoreMountsUnder,
		Unreadable:        func(pid int, _ error) { unreadable[pid] = true },
	}
	cands, reach, err := candidates(ropts, nil)
	if err != nil {
		return nil, err
	}
	if len(cands) > 0 && opts.Recheck >= 0 {
		d := opts.Recheck
		if d == 0 {
			d = DefaultRecheck
		}
		time.Sleep(d)
		cands, reach, err = candidates(ropts, cands)
		if err != nil {
			return nil, err
		}
	}
	rep.ReachableNetns = len(reach)
	nsids := map[int]bool{}
	for _, l := range cands {
		rep.Leaks = append(rep.Leaks, l)
		nsids[l.NSID] = true
	}
	rep.LeakedNetns = len(nsids)
	sort.Slice(rep.Leaks, func(i, j int) bool {
		a, b := rep.Leaks[i], rep.Leaks[j]
		if a.NSID != b.NSID {
			return a.NSID < b.NSID
		}
		return a.Ifindex < b.Ifindex
	})
	if opts.Store != nil {
		var warn []string
		rep.Discarded, warn = annotate(rep.Leaks, opts.Store)
		rep.Warnings = append(rep.Warnings, warn...)
	}
	slabPath := opts.SlabInfo
	if slabPath == "" {
		proc := opts.ProcRoot
		if proc == "" {
			proc = "/proc"
		}
		slabPath = proc + "/slabinfo"
	}
	rep.Slab = estimateSlab(slabPath, reach)
	for pid := range unreadable {
		rep.UnreadableProcesses = append(rep.UnreadableProcesses, pid)
	}
	sort.Ints(rep.UnreadableProcesses)
	rep.Time = time.Now().UTC()
	rep.DurationSeconds = time.Since(start).Seconds()
	return rep, nil
}

// candidates lists the host links pointing into an unreachable netns. With
// prev set, only links of prev that are still exactly the same (ifindex,
// name, MAC, nsid) are kept.
func candidates(ropts nsreach.Options, prev map[int]Leak) (map[int]Leak, nsreach.Set, error) {
	// Links first: dumping a link that points into a netns assigns that
	// netns an nsid if it had none, so the nsid lookup below sees it.
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, nil, fmt.Errorf("list host links: %w", err)
	}
	reach, err := nsreach.Reachable(ropts)
	if err != nil {
		return nil, nil, fmt.Errorf("walk reachable namespaces: %w", err)
	}
	// A netns whose references all vanished meanwhile is missing from
	// nsids; its links may show up as candidates here, and the re-check
	// (a fresh walk) keeps them only if they are still unreachable then.
	nsids, _, err := nsreach.NSIDs(reach)
	if err != nil {
		return nil, nil, fmt.Errorf("map reachable namespaces to nsids: %w", err)
	}
	out := map[int]Leak{}
	for _, l := range links {
		a := l.Attrs()
		if a.NetNsID < 0 {
			continue
		}
		if _, ok := nsids[a.NetNsID]; ok {
			continue
		}
		c := observe(l)
		if prev != nil {
			p, ok := prev[c.Ifindex]
			if !ok || len(podlink.Compare(p.identity(), c.identity())) > 0 {
				continue
			}
		}
		out[c.Ifindex] = c
	}
	return out, reach, nil
}

func observe(l netlink.Link) Leak {
	id := podlink.HostIdentity(l)
	return Leak{
		HostLink: id.Name, Ifindex: id.Index, MAC: id.MAC, Kind: id.Kind,
		NSID: id.NetNSID, PeerIfindex: id.PeerIndex,
	}
}

// identity is the leaked link's identity as podlink compares it.
func (l Leak) identity() podlink.Identity {
	return podlink.Identity{Name: l.HostLink, Index: l.Ifindex, MAC: l.MAC, Kind: l.Kind, NetNSID: l.NSID, PeerIndex: l.PeerIfindex}
}

// annotate sets Owner and GSSProxyArmed from the record or tombstone whose
// host links include the leak (same ifindex, name and MAC). Live records
// win over tombstones. It returns the files the store discarded and its
// other problems as warnings.
func annotate(leaks []Leak, st *store.Store) ([]Discarded, []string) {
	recs, tombs, problems := st.Entries()
	for i := range leaks {
		if o := findOwner(leaks[i], recs, "record"); o != nil {
			leaks[i].Owner = o
		} else {
			leaks[i].Owner = findOwner(leaks[i], tombs, "tombstone")
		}
		if leaks[i].Owner != nil {
			leaks[i].GSSProxyArmed = leaks[i].Owner.recorded.GSSProxyArmed
		}
	}
	return storeProblems(problems)
}

func findOwner(l Leak, entries []store.Entry, kind string) *Owner {
	for _, e := range entries {
		for _, h := range e.Record.HostLinks {
			if len(podlink.Compare(h, l.identity())) == 0 {
				return &Owner{
					Network: e.Record.Network, ContainerID: e.Record.ContainerID, IfName: e.Record.IfName,
					Kind: kind, File: e.Path, recorded: *e.Record,
				}
			}
		}
	}
	return nil
}

// OpenStoreIfExists opens the state dir if it exists: a missing dir means
// "nothing recorded" and is not created. readOnly (scan, records) never
// changes a file; reap needs to drop tombstones.
func OpenStoreIfExists(dir string, readOnly bool) (*store.Store, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("state dir %q is not absolute", dir)
	}
	// Lstat: a symlink (even a dangling one) is refused by the store, not
	// taken for "nothing recorded".
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if readOnly {
		return store.OpenReadOnly(dir)
	}
	return store.Open(dir)
}
