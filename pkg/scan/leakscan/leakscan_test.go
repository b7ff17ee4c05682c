package leakscan_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
	"github.com/leakguard/leakguard/pkg/scan/leakscan"
	"github.com/leakguard/leakguard/test/nsutil"
	"github.com/leakguard/leakguard/test/scantest"
)

// scan runs a scan with node as the host.
func scan(t *testing.T, node ns.NetNS, opts leakscan.Options) *leakscan.Report {
	t.Helper()
	var rep *leakscan.Report
	err := node.Do(func(ns.NetNS) error {
		var err error
		rep, err = leakscan.Scan(opts)
		return err
	})
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return rep
}

func reap(t *testing.T, node ns.NetNS, leaks []leakscan.Leak, opts leakscan.ReapOptions) []leakscan.ReapResult {
	t.Helper()
	var res []leakscan.ReapResult
	err := node.Do(func(ns.NetNS) error {
		var err error
		res, err = leakscan.Reap(leaks, opts)
		return err
	})
	if err != nil {
		t.Fatalf("Reap: %v", err)
	}
	return res
}

// linkNames lists the node's links.
func linkNames(t *testing.T, node ns.NetNS) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := node.Do(func(ns.NetNS) error {
		ls, err := netlinksafe.LinkList()
		for _, l := range ls {
			names[l.Attrs().Name] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func leakNames(ls []leakscan.Leak) string {
	var n []string
	for _, l := range ls {
		n = append(n, l.HostLink)
	}
	return strings.Join(n, ",")
}

// Only the netns kept alive by nothing but a socket inside it is leaked;
// a process, a thread, a mount, a mount in another mount namespace or an
// open fd each keep theirs reachable.
func TestScanReportsOnlyTheUnreachableNetns(t *testing.T) {
	node := nsutil.NewNS(t)
	leaked := scantest.NewPod(t, node, "lgs-leaked")
	byProc := scantest.NewPod(t, node, "lgs-proc")
	byThread := scantest.NewPod(t, node, "lgs-thread")
	mounted := scantest.NewPod(t, node, "lgs-mount")
	privMount := scantest.NewPod(t, node, "lgs-privmnt")
	byFd := scantest.NewPod(t, node, "lgs-fd")
	// A veth with both ends on the node has no link-netnsid.
	if err := node.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lgs-local"}, PeerName: "lgs-local-p"})
	}); err != nil {
		t.Fatal(err)
	}

	nsutil.LeakBySocket(t, leaked.NS)
	scantest.KeepByProcess(t, byProc.NS)
	scantest.KeepByThread(t, byThread.NS)
	scantest.KeepByMountOnly(t, mounted.NS)
	scantest.KeepByPrivateMount(t, privMount.NS)
	nsutil.LeakByFD(t, byFd.NS)

	rep := scan(t, node, leakscan.Options{})
	if len(rep.Leaks) != 1 {
		t.Fatalf("leaks = [%s]; want exactly lgs-leaked", leakNames(rep.Leaks))
	}
	got, want := rep.Leaks[0], leaked.Host
	if got.HostLink != want.Name || got.Ifindex != want.Index || got.MAC != want.MAC || got.Kind != "veth" ||
		got.NSID != want.NetNSID || got.PeerIfindex != want.PeerIndex || got.Owner != nil || got.GSSProxyArmed {
		t.Fatalf("leak = %+v; want host link %+v, no owner", got, want)
	}
	if rep.LeakedNetns != 1 {
		t.Errorf("LeakedNetns = %d, want 1", rep.LeakedNetns)
	}
	if rep.ReachableNetns < 6 {
		t.Errorf("ReachableNetns = %d; at least the node, 5 pods and init_net are reachable", rep.ReachableNetns)
	}
	t.Logf("slab estimate: %+v", rep.Slab)
	if rep.DurationSeconds < leakscan.DefaultRecheck.Seconds() {
		t.Errorf("scan took %.3fs: a candidate must be re-checked after %v", rep.DurationSeconds, leakscan.DefaultRecheck)
	}
}

// A candidate must still be the same link at the re-check: here the leaked
// veth disappears (as when the kernel finally frees the netns) and another
// leaked veth takes its name meanwhile. Neither is reported by this scan; the
// next one reports the new link.
func TestScanRecheckNeedsTheSameLink(t *testing.T) {
	node := nsutil.NewNS(t)
	first := scantest.NewPod(t, node, "lgs-x")
	second := scantest.NewPod(t, node, "lgs-y")
	nsutil.LeakBySocket(t, first.NS)
	nsutil.LeakBySocket(t, second.NS)
	done := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		done <- node.Do(func(ns.NetNS) error {
			if err := netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: first.Host.Index}}); err != nil {
				return err
			}
			y := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: second.Host.Index}}
			if err := netlink.LinkSetDown(y); err != nil {
				return err
			}
			return netlink.LinkSetName(y, "lgs-x")
		})
	}()
	rep := scan(t, node, leakscan.Options{Recheck: time.Second})
	if err := <-done; err != nil {
		t.Fatalf("replace lgs-x: %v", err)
	}
	if len(rep.Leaks) != 0 {
		t.Fatalf("leaks = %+v; neither link was the same at the re-check", rep.Leaks)
	}
	rep = scan(t, node, leakscan.Options{Recheck: time.Millisecond})
	if len(rep.Leaks) != 1 || rep.Leaks[0].HostLink != "lgs-x" || rep.Leaks[0].Ifindex != second.Host.Index {
		t.Fatalf("next scan: leaks = %+v; want lgs-x at ifindex %d", rep.Leaks, second.Host.Index)
	}
}

type owned struct {
	pod  *scantest.Pod
	key  record.Key
	file string
}

// record saves a record (or tombstone) owning p's host veth.
func saveRecord(t *testing.T, st *store.Store, p *scantest.Pod, cid string, tomb, armed bool) owned {
	t.Helper()
	r := &record.Record{
		Key:     record.Key{Network: "lgnet", ContainerID: cid, IfName: "eth0"},
		Created: time.Now().UTC(), Updated: time.Now().UTC(),
		Netns: p.ID, NetnsPath: p.NS.Path(), HostLinks: []podlink.Identity{p.Host},
		IPs: []string{"10.9.0.2/32"}, GSSProxyArmed: armed,
	}
	o := owned{pod: p, key: r.Key}
	if err := st.Save(r); err != nil {
		t.Fatal(err)
	}
	if tomb {
		l, err := st.Lock(r.Key, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release(false)
		if o.file, err = st.Tombstone(r.Key); err != nil {
			t.Fatal(err)
		}
		return o
	}
	recs, _, _ := st.Entries()
	for _, e := range recs {
		if e.Record.Key == r.Key {
			o.file = e.Path
		}
	}
	if o.file == "" {
		t.Fatalf("saved record %s not listed", r.Key)
	}
	return o
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

// Owners come from records and tombstones; reap deletes owned leaks by
// default and drops their state files, unrecorded ones only with AllOrphans,
// nothing in a dry run, and never a live pod's link.
func TestOwnersAndReap(t *testing.T) {
	node := nsutil.NewNS(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	rec := saveRecord(t, st, scantest.NewPod(t, node, "lgs-rec"), "ctr-rec", false, true)
	tomb := saveRecord(t, st, scantest.NewPod(t, node, "lgs-tomb"), "ctr-tomb", true, false)
	live := saveRecord(t, st, scantest.NewPod(t, node, "lgs-live"), "ctr-live", false, false)
	orphan := scantest.NewPod(t, node, "lgs-orphan")
	nsutil.LeakBySocket(t, rec.pod.NS)
	nsutil.LeakBySocket(t, tomb.pod.NS)
	nsutil.LeakBySocket(t, orphan.NS)
	scantest.KeepByMountOnly(t, live.pod.NS)

	rep := scan(t, node, leakscan.Options{Store: st})
	if len(rep.Leaks) != 3 {
		t.Fatalf("leaks = [%s]; want lgs-rec, lgs-tomb, lgs-orphan", leakNames(rep.Leaks))
	}
	byName := map[string]leakscan.Leak{}
	for _, l := range rep.Leaks {
		byName[l.HostLink] = l
	}
	for name, w := range map[string]struct {
		o     *owned
		kind  string
		armed bool
	}{"lgs-rec": {&rec, "record", true}, "lgs-tomb": {&tomb, "tombstone", false}, "lgs-orphan": {nil, "", false}} {
		l, ok := byName[name]
		switch {
		case !ok:
			t.Fatalf("%s not reported leaked; leaks = [%s]", name, leakNames(rep.Leaks))
		case w.o == nil && l.Owner != nil:
			t.Errorf("%s: owner %+v, want none", name, l.Owner)
		case w.o != nil && (l.Owner == nil || l.Owner.Kind != w.kind || l.Owner.ContainerID != w.o.key.ContainerID ||
			l.Owner.Network != "lgnet" || l.Owner.IfName != "eth0" || l.Owner.File != w.o.file):
			t.Errorf("%s: owner %+v, want %s %s in %s", name, l.Owner, w.kind, w.o.key, w.o.file)
		case l.GSSProxyArmed != w.armed:
			t.Errorf("%s: gssProxyArmed %v, want %v", name, l.GSSProxyArmed, w.armed)
		}
	}

	all := []string{"lgs-rec", "lgs-tomb", "lgs-orphan", "lgs-live"}
	mustHave := func(present ...string) {
		t.Helper()
		names := linkNames(t, node)
		for _, n := range all {
			want := false
			for _, p := range present {
				want = want || p == n
			}
			if names[n] != want {
				t.Errorf("link %s present = %v, want %v", n, names[n], want)
			}
		}
	}

	// Dry run: decisions, no deletion.
	res := reap(t, node, rep.Leaks, leakscan.ReapOptions{Store: st, DryRun: true, AllOrphans: true})
	for _, r := range res {
		if r.Action != leakscan.ActionWouldDelete {
			t.Errorf("dry run: %s %s (%s), want would-delete", r.HostLink, r.Action, r.Reason)
		}
	}
	mustHave(all...)

	// A leak whose link changed since the scan is left alone.
	changed := byName["lgs-orphan"]
	changed.MAC = "02:00:00:00:00:01"
	res = reap(t, node, []leakscan.Leak{changed}, leakscan.ReapOptions{Store: st, AllOrphans: true})
	if res[0].Action != leakscan.ActionSkipped || !strings.Contains(res[0].Reason, "MAC") {
		t.Errorf("changed link: %s (%s), want skipped for its MAC", res[0].Action, res[0].Reason)
	}
	mustHave(all...)

	// Default: owned only. A reaped tombstone goes; a reaped live record
	// stays for its DEL or GC (routes, rules, pin); the live pod's record stays.
	res = reap(t, node, rep.Leaks, leakscan.ReapOptions{Store: st})
	for _, r := range res {
		want := leakscan.ActionDeleted
		if r.HostLink == "lgs-orphan" {
			want = leakscan.ActionSkipped
		}
		if r.Action != want {
			t.Errorf("reap: %s %s (%s), want %s", r.HostLink, r.Action, r.Reason, want)
		}
		if r.HostLink == "lgs-tomb" && r.StateFileRemoved != r.Owner.File {
			t.Errorf("reap %s: tombstone removed %q, want %s", r.HostLink, r.StateFileRemoved, r.Owner.File)
		}
		if r.HostLink == "lgs-rec" && (r.StateFileRemoved != "" || !strings.Contains(r.Reason, "record kept")) {
			t.Errorf("reap %s: a live record must be kept for DEL/GC, got removed %q (%s)", r.HostLink, r.StateFileRemoved, r.Reason)
		}
	}
	mustHave("lgs-orphan", "lgs-live")
	if !exists(rec.file) || exists(tomb.file) {
		t.Errorf("after reap: record kept %v (want true), tombstone kept %v (want false)", exists(rec.file), exists(tomb.file))
	}
	if !exists(live.file) {
		t.Errorf("live pod's record %s removed", live.file)
	}

	// AllOrphans: the unrecorded one too, re-verified from the scan.
	res = reap(t, node, []leakscan.Leak{byName["lgs-orphan"]}, leakscan.ReapOptions{Store: st, AllOrphans: true})
	if res[0].Action != leakscan.ActionDeleted {
		t.Errorf("orphan: %s (%s), want deleted", res[0].Action, res[0].Reason)
	}
	mustHave("lgs-live")
	if rep := scan(t, node, leakscan.Options{Store: st}); len(rep.Leaks) != 0 {
		t.Errorf("after reap, leaks = [%s]", leakNames(rep.Leaks))
	}
}

// A pinned record keeps its file after its link is reaped: DEL/GC must
// remove the pin first.
func TestReapKeepsPinnedRecord(t *testing.T) {
	node := nsutil.NewNS(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	p := scantest.NewPod(t, node, "lgs-pinned")
	r := &record.Record{
		Key:   record.Key{Network: "lgnet", ContainerID: "ctr-pin", IfName: "eth0"},
		Netns: p.ID, HostLinks: []podlink.Identity{p.Host},
		Pin: &nspin.Pin{Path: filepath.Join(t.TempDir(), "pin"), Netns: p.ID},
	}
	if err := st.Save(r); err != nil {
		t.Fatal(err)
	}
	nsutil.LeakBySocket(t, p.NS)
	rep := scan(t, node, leakscan.Options{Store: st})
	if len(rep.Leaks) != 1 || rep.Leaks[0].Owner == nil {
		t.Fatalf("leaks = %+v; want lgs-pinned, owned", rep.Leaks)
	}
	res := reap(t, node, rep.Leaks, leakscan.ReapOptions{Store: st})
	if res[0].Action != leakscan.ActionDeleted || res[0].StateFileRemoved != "" || !strings.Contains(res[0].Reason, "pin") {
		t.Fatalf("reap = %+v; want deleted, record kept for its pin", res[0])
	}
	if !exists(rep.Leaks[0].Owner.File) {
		t.Fatal("pinned record removed")
	}
}

// Reap drops a tombstone once none of its links remains, by the same rule
// as DEL's sweep and GC (podlink.Remains): a recorded ifindex that now names
// another link counts as gone, and that link is left alone.
func TestReapDropsTombstoneWhoseOtherLinkWasReplaced(t *testing.T) {
	node := nsutil.NewNS(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	pod := scantest.NewPod(t, node, "lgs-tomb2")
	other := scantest.NewPod(t, node, "lgs-other")
	// The tombstone also records a second link whose ifindex other's host
	// veth now holds (with another MAC and peer).
	replaced := other.Host
	replaced.Name, replaced.MAC, replaced.PeerIndex = "lgs-was", "02:00:00:00:00:07", other.Host.PeerIndex+100
	r := &record.Record{
		Key:     record.Key{Network: "lgnet", ContainerID: "ctr-tomb2", IfName: "eth0"},
		Created: time.Now().UTC(), Updated: time.Now().UTC(),
		Netns: pod.ID, NetnsPath: pod.NS.Path(), HostLinks: []podlink.Identity{pod.Host, replaced},
	}
	if err := st.Save(r); err != nil {
		t.Fatal(err)
	}
	l, err := st.Lock(r.Key, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	file, err := st.Tombstone(r.Key)
	l.Release(false)
	if err != nil {
		t.Fatal(err)
	}
	nsutil.LeakBySocket(t, pod.NS)
	nsutil.LeakBySocket(t, other.NS)

	rep := scan(t, node, leakscan.Options{Store: st})
	var leak *leakscan.Leak
	for i := range rep.Leaks {
		if rep.Leaks[i].HostLink == "lgs-tomb2" {
			leak = &rep.Leaks[i]
		}
	}
	if leak == nil || leak.Owner == nil || leak.Owner.File != file {
		t.Fatalf("lgs-tomb2 not reported as owned by %s: %+v", file, rep.Leaks)
	}
	res := reap(t, node, []leakscan.Leak{*leak}, leakscan.ReapOptions{Store: st})
	if res[0].Action != leakscan.ActionDeleted || res[0].StateFileRemoved != file {
		t.Fatalf("reap: %s (%s), removed %q; want deleted and %s removed", res[0].Action, res[0].Reason, res[0].StateFileRemoved, file)
	}
	if exists(file) {
		t.Errorf("tombstone %s kept", file)
	}
	if !linkNames(t, node)["lgs-other"] {
		t.Error("the link now at the replaced ifindex was deleted")
	}
}
