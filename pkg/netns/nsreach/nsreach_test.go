package nsreach_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/netns/nsreach"
	"github.com/leakguard/leakguard/test/nsutil"
	"github.com/leakguard/leakguard/test/scantest"
)

// tolerate accepts processes this machine does not let root inspect (an
// LSM-guarded init): the namespaces under test are never held by them.
func tolerate(t *testing.T) func(int, error) {
	return func(pid int, err error) { t.Logf("unreadable pid %d: %v", pid, err) }
}

func identity(t *testing.T, n ns.NetNS) nsident.Identity {
	t.Helper()
	id, err := nsident.OfFd(n.Fd())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestReachableByEveryKindOfReference(t *testing.T) {
	mounted, fdHeld, socketHeld := nsutil.NewNS(t), nsutil.NewNS(t), nsutil.NewNS(t)
	byProc, byThread, privMount := nsutil.NewNS(t), nsutil.NewNS(t), nsutil.NewNS(t)
	ids := map[string]nsident.Identity{}
	for name, n := range map[string]ns.NetNS{"mounted": mounted, "fd": fdHeld, "socket": socketHeld, "process": byProc, "thread": byThread, "private mount": privMount} {
		ids[name] = identity(t, n)
	}
	mountDir := filepath.Dir(mounted.Path())
	resolved, err := filepath.EvalSymlinks(mountDir)
	if err != nil {
		t.Fatal(err)
	}

	scantest.KeepByMountOnly(t, mounted)
	nsutil.LeakByFD(t, fdHeld)
	nsutil.LeakBySocket(t, socketHeld)
	proc := scantest.KeepByProcess(t, byProc)
	tid := scantest.KeepByThread(t, byThread)
	priv := scantest.KeepByPrivateMount(t, privMount)

	set, err := nsreach.Reachable(nsreach.Options{Unreadable: tolerate(t)})
	if err != nil {
		t.Fatalf("Reachable: %v", err)
	}
	want := map[string]struct {
		via  nsreach.Via
		pid  int
		path string
	}{
		"mounted":       {nsreach.ViaMount, 0, filepath.Join(resolved, filepath.Base(mounted.Path()))},
		"fd":            {nsreach.ViaFd, os.Getpid(), fmt.Sprintf("/proc/%d/fd/", os.Getpid())},
		"process":       {nsreach.ViaProcess, proc.Process.Pid, fmt.Sprintf("/proc/%d/ns/net", proc.Process.Pid)},
		"thread":        {nsreach.ViaThread, os.Getpid(), fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), tid)},
		"private mount": {nsreach.ViaMount, priv.Process.Pid, fmt.Sprintf("/proc/%d/root%s/%s", priv.Process.Pid, resolved, filepath.Base(privMount.Path()))},
	}
	for name, w := range want {
		r, ok := set[ids[name]]
		if !ok {
			t.Errorf("%s-held netns %v not reachable", name, ids[name])
			continue
		}
		if r.Via != w.via || r.PID != w.pid || !strings.HasPrefix(r.Path, w.path) {
			t.Errorf("%s-held netns reached as %+v; want via %s pid %d path %s...", name, r, w.via, w.pid, w.path)
		}
		// The reference must open the very netns.
		got, err := nsident.OfPath(r.Path)
		if err != nil || got != ids[name] {
			t.Errorf("%s: %s opens %v (%v), want %v", name, r.Path, got, err, ids[name])
		}
	}
	if _, ok := set[ids["socket"]]; ok {
		t.Errorf("socket-held netns %v reported reachable as %+v", ids["socket"], set[ids["socket"]])
	}
	host, err := nsident.Current()
	if err != nil {
		t.Fatal(err)
	}
	if !set.Reachable(host) {
		t.Errorf("our own netns %v not reachable", host)
	}

	set, err = nsreach.Reachable(nsreach.Options{Unreadable: tolerate(t), IgnoreMountsUnder: []string{mountDir}})
	if err != nil {
		t.Fatalf("Reachable ignoring %s: %v", mountDir, err)
	}
	if r, ok := set[ids["mounted"]]; ok {
		t.Errorf("netns mounted under ignored %s still reachable as %+v", mountDir, r)
	}
	if r, ok := set[ids["private mount"]]; ok {
		t.Errorf("netns mounted under ignored %s in another mount namespace still reachable as %+v", mountDir, r)
	}
}

func TestNSIDsMapsHostNsidToNetns(t *testing.T) {
	node := nsutil.NewNS(t)
	linked := scantest.NewPod(t, node, "lgr-linked")
	unlinked := nsutil.NewNS(t)
	_ = unlinked
	err := node.Do(func(ns.NetNS) error {
		set, err := nsreach.Reachable(nsreach.Options{Unreadable: tolerate(t)})
		if err != nil {
			return err
		}
		if !set.Reachable(linked.ID) {
			return fmt.Errorf("pod netns %v not reachable", linked.ID)
		}
		ids, unresolved, err := nsreach.NSIDs(set)
		if err != nil {
			return err
		}
		if unresolved != 0 {
			return fmt.Errorf("%d netns unresolved on a quiet node", unresolved)
		}
		if got, ok := ids[linked.Host.NetNSID]; !ok || got != linked.ID {
			return fmt.Errorf("nsid %d maps to %v (%v); want the pod netns %v", linked.Host.NetNSID, got, ok, linked.ID)
		}
		for nsid, id := range ids {
			if id == identity(t, unlinked) {
				return fmt.Errorf("netns with no link from the node got nsid %d", nsid)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestParseMountinfo(t *testing.T) {
	in := "36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n" +
		"611 29 0:4 net:[4026532291] /run/netns/a\\040b rw shared:5 - nsfs nsfs rw\n" +
		"612 29 0:4 net:[4026532292] /run/x rw - nsfs nsfs rw\n" +
		"garbage line\n"
	got := nsreach.ParseMountinfo([]byte(in))
	want := []nsreach.Mount{
		{Root: "/", MountPoint: "/mnt1", FSType: "ext3"},
		{Root: "net:[4026532291]", MountPoint: "/run/netns/a b", FSType: "nsfs"},
		{Root: "net:[4026532292]", MountPoint: "/run/x", FSType: "nsfs"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ParseMountinfo = %+v\nwant %+v", got, want)
	}
}

// A netns reached first through a process that exits before NSIDs runs is
// still resolved through its other references (here its mount); one whose
// only reference vanished is counted unresolved, never silently dropped.
func TestNSIDsSurviveAVanishedReference(t *testing.T) {
	node := nsutil.NewNS(t)
	pod := scantest.NewPod(t, node, "lgr-alt")
	procOnly := scantest.NewPod(t, node, "lgr-proc")
	start := func(n ns.NetNS) *exec.Cmd {
		c := exec.Command("sleep", "60")
		if err := n.Do(func(ns.NetNS) error { return c.Start() }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		return c
	}
	first := start(pod.NS)
	only := start(procOnly.NS)
	nsutil.LeakByFD(t, procOnly.NS) // drop its path...
	_ = procOnly.NS.Close()         // ...and our fd: the process alone holds it

	err := node.Do(func(ns.NetNS) error {
		set, err := nsreach.Reachable(nsreach.Options{Unreadable: tolerate(t)})
		if err != nil {
			return err
		}
		if r := set[pod.ID]; r.Via != nsreach.ViaProcess || len(r.Alternates) == 0 {
			return fmt.Errorf("pod netns should be reached first through its process, with alternates: %+v", r)
		}
		if !set.Reachable(procOnly.ID) {
			return fmt.Errorf("process-held netns not reachable")
		}
		for _, c := range []*exec.Cmd{first, only} {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
		// Named, not counted: other netns of this machine may vanish
		// meanwhile too.
		ids, unresolved, err := nsreach.Resolve(set)
		if err != nil {
			return err
		}
		if got, ok := ids[pod.Host.NetNSID]; !ok || got != pod.ID {
			return fmt.Errorf("pod netns lost with its first reference: nsid %d -> %v (%v)", pod.Host.NetNSID, got, ok)
		}
		if !slices.Contains(unresolved, procOnly.ID) || slices.Contains(unresolved, pod.ID) {
			return fmt.Errorf("unresolved = %v, want the netns whose only process exited (%v) and not the mounted one (%v)", unresolved, procOnly.ID, pod.ID)
		}
		if _, n, err := nsreach.NSIDs(set); err != nil || n < 1 {
			return fmt.Errorf("NSIDs counts %d unresolved (%v); the exited process's netns is one", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A netns with more processes in it than the walk keeps references for (a
// node netns with many short-lived CNI processes, a pod running probes) is
// still resolved once they all exit, through its mount: the references kept
// must not all go away with processes.
func TestNSIDsSurviveManyVanishedProcesses(t *testing.T) {
	node := nsutil.NewNS(t)
	pod := scantest.NewPod(t, node, "lgr-many")
	var procs []*exec.Cmd
	for i := 0; i < 8; i++ {
		c := exec.Command("sleep", "60")
		if err := pod.NS.Do(func(ns.NetNS) error { return c.Start() }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		procs = append(procs, c)
	}
	err := node.Do(func(ns.NetNS) error {
		set, err := nsreach.Reachable(nsreach.Options{Unreadable: tolerate(t)})
		if err != nil {
			return err
		}
		if r := set[pod.ID]; r.Via != nsreach.ViaProcess {
			return fmt.Errorf("pod netns should be reached first through a process: %+v", r)
		}
		for _, c := range procs {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
		ids, _, err := nsreach.NSIDs(set)
		if err != nil {
			return err
		}
		if got, ok := ids[pod.Host.NetNSID]; !ok || got != pod.ID {
			return fmt.Errorf("mounted pod netns lost with its %d processes: nsid %d -> %v (%v); refs %+v",
				len(procs), pod.Host.NetNSID, got, ok, set[pod.ID])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
