package k8s

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/test/runtime"
)

// testInstall: the image imported, `kubectl apply -k` of the overlay → the
// DaemonSet's pod Running and Ready, leakguard last in the node's chain
// with its binary in place; a pod created afterwards gets a record, and
// `kubectl delete pod` runs its DEL through leakguard.
func testInstall(t *testing.T, e *env) {
	if e.installed {
		return
	}
	c := e.c
	c.MustKubectl(t, "apply", "-k", e.ov.Dir)
	agent := e.waitAgentReady(t, agentReadyTimeout)
	for _, cs := range agent.Status.ContainerStatuses {
		if !cs.Ready {
			t.Errorf("container %s of %s not ready", cs.Name, agent.Metadata.Name)
		}
	}
	types, file, err := e.chain()
	if err != nil {
		t.Fatalf("node's conf dir after install: %v", err)
	}
	if !slices.Equal(types, []string{"bridge", "leakguard"}) {
		t.Fatalf("chain of %s: %v, want [bridge leakguard]", file, types)
	}
	if !e.hasBinary() {
		t.Fatalf("%s not installed", e.binaryPath())
	}
	e.installed = true

	p := e.runPod(t, "after-install")
	rec := e.record(t, p.Sandbox.ID)
	if rec == nil {
		t.Fatalf("no leakguard record for pod %s (sandbox %s); state dir: %v", p.Name, p.Sandbox.ID, e.c.CNI.StateEntries(t))
	}
	if len(rec.Record.HostLinks) == 0 {
		t.Errorf("record %s holds no host link", rec.Path)
	}
	if calls := e.leakguardCalls(t, p.Sandbox.ID); !slices.Contains(calls, "ADD") {
		t.Errorf("leakguard logged %v for the pod's sandbox, want an ADD", calls)
	}
	e.deletePod(t, p)
	if calls := e.leakguardCalls(t, p.Sandbox.ID); !slices.Contains(calls, "DEL") {
		t.Errorf("leakguard logged %v for the deleted pod's sandbox, want a DEL", calls)
	}
	if rec := e.record(t, p.Sandbox.ID); rec != nil {
		t.Errorf("record %s still live after the pod's DEL", rec.Path)
	}
}

// hostVeth returns the host end of a pod's veth (the record names it).
func (e *env) hostVeth(t testing.TB, p testPod) netlink.Link {
	t.Helper()
	rec := e.record(t, p.Sandbox.ID)
	if rec == nil || len(rec.Record.HostLinks) != 1 {
		t.Fatalf("pod %s: want a record with one host link, have %+v", p.Name, rec)
	}
	veths, err := e.c.Network.HostVeths()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range veths {
		if v.Attrs().Index == rec.Record.HostLinks[0].Index {
			return v
		}
	}
	t.Fatalf("host veth %+v of pod %s not on bridge %s", rec.Record.HostLinks[0], p.Name, e.c.Network.Bridge)
	return nil
}

// vethGone reports whether the host veth (same index and MAC) is gone.
func (e *env) vethGone(t testing.TB, v netlink.Link) bool {
	t.Helper()
	veths, err := e.c.Network.HostVeths()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range veths {
		if l.Attrs().Index == v.Attrs().Index && l.Attrs().HardwareAddr.String() == v.Attrs().HardwareAddr.String() {
			return false
		}
	}
	return true
}

// leakPod runs a pod and makes its netns leak as the auth_rpcgss bug does:
// kept alive by a socket inside it (runtime.HoldNetns), its bind mount
// removed (the runtime's path gone).
func (e *env) leakPod(t testing.TB, prefix string) (testPod, netlink.Link, *runtime.NetnsHolder) {
	t.Helper()
	p := e.runPod(t, prefix)
	if p.Sandbox.NetnsPath == "" {
		t.Fatalf("no netns path for sandbox %s", p.Sandbox.ID)
	}
	veth := e.hostVeth(t, p)
	h := runtime.HoldNetns(t, e.c.Tools.Runtime, p.Sandbox.NetnsPath)
	if err := runtime.RemoveNetnsPath(p.Sandbox.NetnsPath); err != nil {
		t.Fatal(err)
	}
	return p, veth, h
}

// testLeak: a leaked netns, then `kubectl delete pod` → leakguard's DEL
// (CNI_NETNS gone) reaps the host veth from its record; the agent's
// /metrics then shows no leaked host link left and exposes the leak
// gauges and reap counters.
func testLeak(t *testing.T, e *env) {
	p, veth, h := e.leakPod(t, "leak")
	defer h.Release()
	e.deletePod(t, p)
	if !e.vethGone(t, veth) {
		t.Fatalf("host veth %s of the leaked pod survives its DEL", veth.Attrs().Name)
	}
	if calls := e.leakguardCalls(t, p.Sandbox.ID); !slices.Contains(calls, "DEL") {
		t.Errorf("leakguard logged %v for the leaked pod, want a DEL", calls)
	}
	// A scan after the DEL: nothing left to reap.
	before := e.metrics(t)["leakguard_scans_total"]
	var m map[string]float64
	deadline := time.Now().Add(15 * time.Second)
	for m = e.metrics(t); m["leakguard_scans_total"] < before+2; m = e.metrics(t) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not scan twice in 15 s (interval 1s): scans_total %v", m["leakguard_scans_total"])
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, name := range []string{"leakguard_leaked_netns", `leakguard_reaped_total{kind="host_link"}`, `leakguard_reap_errors_total{kind="host_link"}`} {
		if _, ok := m[name]; !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if v := m[`leakguard_leaked_host_links{owned="true"}`] + m[`leakguard_leaked_host_links{owned="false"}`]; v != 0 {
		t.Errorf("leakguard_leaked_host_links %v after the DEL reaped the veth, want 0", v)
	}
	t.Logf("after the leaked pod's DEL: leaked_netns %v, slab estimate %v, reaped host_link %v",
		m["leakguard_leaked_netns"], m["leakguard_slab_leaked_netns_estimate"], m[`leakguard_reaped_total{kind="host_link"}`])
}

// testLeakReapedByAgent: the leak with no DEL coming (kubelet frozen, the
// pod's processes killed: nothing in userspace reaches the netns, its host
// veth lives on) → the agent's scan reports it (leakguard_leaked_netns,
// leaked_host_links{owned="true"}) and --reap owned deletes the veth
// (leakguard_reaped_total{kind="host_link"}); then the pod's DEL, once
// kubelet is back, succeeds.
func testLeakReapedByAgent(t *testing.T, e *env) {
	p, veth, h := e.leakPod(t, "leak-agent")
	defer h.Release()
	inode, err := netnsInode(p.Sandbox.PID)
	if err != nil {
		t.Fatal(err)
	}
	reapedBefore := e.metrics(t)[`leakguard_reaped_total{kind="host_link"}`]

	thaw := e.c.FreezeKubelet(t)
	killNetnsProcesses(t, inode)
	var sawLeak, sawOwnedLink float64
	deadline := time.Now().Add(20 * time.Second)
	for !e.vethGone(t, veth) {
		m := e.metrics(t)
		sawLeak = max(sawLeak, m["leakguard_leaked_netns"])
		sawOwnedLink = max(sawOwnedLink, m[`leakguard_leaked_host_links{owned="true"}`])
		if time.Now().After(deadline) {
			thaw()
			t.Fatalf("the agent did not reap host veth %s in 20 s (leaked_netns seen %v)", veth.Attrs().Name, sawLeak)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The round that reaped publishes what it found (before the reap) once
	// it ends: for one interval.
	var m map[string]float64
	for end := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		m = e.metrics(t)
		sawLeak = max(sawLeak, m["leakguard_leaked_netns"])
		sawOwnedLink = max(sawOwnedLink, m[`leakguard_leaked_host_links{owned="true"}`])
		if (sawLeak >= 1 && sawOwnedLink >= 1) || time.Now().After(end) {
			break
		}
	}
	thaw()
	if sawLeak < 1 || sawOwnedLink < 1 {
		t.Errorf("/metrics never showed the leak: leakguard_leaked_netns max %v, leaked_host_links{owned=\"true\"} max %v", sawLeak, sawOwnedLink)
	}
	if got := m[`leakguard_reaped_total{kind="host_link"}`]; got < reapedBefore+1 {
		t.Errorf("leakguard_reaped_total{kind=\"host_link\"} %v, want at least %v", got, reapedBefore+1)
	}
	e.deletePod(t, p)
	t.Logf("agent: leaked_netns max %v, owned leaked links max %v, reaped host_link %v → %v",
		sawLeak, sawOwnedLink, reapedBefore, m[`leakguard_reaped_total{kind="host_link"}`])
}

// netnsInode is the inode of a process's netns.
func netnsInode(pid int) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// killNetnsProcesses SIGKILLs every process in the netns (the pod's pause
// and containers) and waits until none is left.
func killNetnsProcesses(t testing.TB, inode uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []int
		entries, err := os.ReadDir("/proc")
		if err != nil {
			t.Fatal(err)
		}
		for _, ent := range entries {
			var pid int
			if _, err := fmt.Sscanf(ent.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
				continue
			}
			if ino, err := netnsInode(pid); err == nil && ino == inode {
				left = append(left, pid)
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
					t.Fatalf("kill %d: %v", pid, err)
				}
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes in the pod's netns survive SIGKILL: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// podDescription is for failure messages.
func podDescription(p testPod) string {
	return strings.Join([]string{p.Name, p.Pod.Metadata.UID, p.Sandbox.ID}, " ")
}
