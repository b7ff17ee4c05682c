package k8s

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// chainWatch samples the node's chain (the conf file containerd loads,
// through libcni) and leakguard's binary every millisecond, and records
// the inotify events of both dirs in their kernel order, while an upgrade
// or uninstall runs.
type chainWatch struct {
	e    *env
	w    *fsnotify.Watcher
	stop chan struct{}
	done sync.WaitGroup

	mu      sync.Mutex
	samples int
	// withoutEntry, withoutBinary, entryWithoutBinary count samples.
	withoutEntry, withoutBinary, entryWithoutBinary int
	loadErrors                                      []string
	events                                          []string
}

func (e *env) watchChain(t testing.TB) *chainWatch {
	t.Helper()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{e.c.CNI.ConfDir, e.c.CNI.BinDir} {
		if err := w.Add(d); err != nil {
			w.Close()
			t.Fatal(err)
		}
	}
	cw := &chainWatch{e: e, w: w, stop: make(chan struct{})}
	cw.done.Add(2)
	go func() {
		defer cw.done.Done()
		for {
			select {
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				cw.mu.Lock()
				cw.events = append(cw.events, ev.Op.String()+" "+ev.Name)
				cw.mu.Unlock()
			case <-w.Errors:
			case <-cw.stop:
				return
			}
		}
	}()
	go func() {
		defer cw.done.Done()
		for {
			select {
			case <-cw.stop:
				return
			default:
			}
			entry, err := e.hasEntry()
			binary := e.hasBinary()
			cw.mu.Lock()
			cw.samples++
			switch {
			case err != nil:
				if len(cw.loadErrors) < 10 {
					cw.loadErrors = append(cw.loadErrors, err.Error())
				}
			case !entry:
				cw.withoutEntry++
			}
			if !binary {
				cw.withoutBinary++
			}
			if err == nil && entry && !binary {
				cw.entryWithoutBinary++
			}
			cw.mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	t.Cleanup(cw.close)
	return cw
}

func (cw *chainWatch) close() {
	select {
	case <-cw.stop:
		return
	default:
	}
	close(cw.stop)
	cw.w.Close()
	cw.done.Wait()
}

// testAgentFigures prints the DaemonSet agent's RSS and CPU while nothing
// changes on the node (at the e2e --interval of 1 s, so an upper bound of
// the 60 s default's). Figures, not assertions.
func testAgentFigures(t *testing.T, e *env) {
	pid := e.agentPID(t)
	rss := func() string {
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				return strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:"))
			}
		}
		return "?"
	}
	const window = 10 * time.Second
	cpu0, err := procCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(window)
	cpu1, err := procCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("agent (pid %d): RSS %s, CPU %.2f%% of a core over %v at --interval 1s",
		pid, rss(), 100*(cpu1-cpu0).Seconds()/window.Seconds(), window)
}

// agentPID is the host pid of the DaemonSet pod's agent container.
func (e *env) agentPID(t testing.TB) int {
	t.Helper()
	agent := e.agentPod(t)
	cr := e.c.Containerd.Crictl
	id := strings.TrimSpace(cr.MustRun(t, "ps", "-q", "--name", "^agent$", "--label", "io.kubernetes.pod.uid="+agent.Metadata.UID))
	if id == "" || strings.Contains(id, "\n") {
		t.Fatalf("agent container of %s: %q", agent.Metadata.Name, id)
	}
	var info struct {
		Info struct {
			PID int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(cr.MustRun(t, "inspect", "-o", "json", id)), &info); err != nil || info.Info.PID == 0 {
		t.Fatalf("inspect agent container %s: %v", id, err)
	}
	return info.Info.PID
}

// procCPU is a process's user+system time (clock ticks of 10 ms).
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	u, err1 := strconv.ParseInt(fields[11], 10, 64)
	sys, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q %q", pid, fields[11], fields[12])
	}
	return time.Duration(u+sys) * 10 * time.Millisecond, nil
}

// testRolloutRestart: `kubectl rollout restart` of the DaemonSet (an
// upgrade) → the entry and the binary stay throughout (sampled every
// millisecond), and pods added and deleted meanwhile all had their DEL run
// through leakguard.
func testRolloutRestart(t *testing.T, e *env) {
	old := e.agentPod(t)
	logs := e.followLogs(t, old)
	defer func() {
		if t.Failed() {
			t.Logf("old agent pod's logs:\n%s", logs())
		}
	}()
	before := e.runPod(t, "before-restart")
	cw := e.watchChain(t)
	e.c.MustKubectl(t, "rollout", "restart", "-n", namespace, "daemonset/"+daemonSetName)
	// A pod added and one deleted while the agent restarts.
	during := e.runPod(t, "during-restart")
	e.deletePod(t, before)
	e.c.MustKubectl(t, "rollout", "status", "-n", namespace, "daemonset/"+daemonSetName, "--timeout=180s")
	agent := e.waitAgentReady(t, agentReadyTimeout)
	e.deletePod(t, during)
	cw.close()
	if agent.Metadata.UID == old.Metadata.UID {
		t.Fatalf("the DaemonSet's pod %s was not replaced", old.Metadata.Name)
	}
	t.Logf("restart watched over %d samples", cw.samples)
	if cw.withoutEntry > 0 || cw.withoutBinary > 0 || len(cw.loadErrors) > 0 {
		t.Errorf("during the restart: %d samples without the entry, %d without the binary, load errors %v",
			cw.withoutEntry, cw.withoutBinary, cw.loadErrors)
	}
	for _, p := range []testPod{before, during} {
		if calls := e.leakguardCalls(t, p.Sandbox.ID); !slices.Contains(calls, "DEL") {
			t.Errorf("pod %s: leakguard logged %v, want its DEL", p.Name, calls)
		}
	}
	if e.record(t, during.Sandbox.ID) != nil {
		t.Errorf("pod %s's record outlives its DEL", during.Name)
	}
}

// testUninstall: `kubectl delete -k` → the entry goes before the binary
// (the agent's --uninstall-on-delete), never a chain naming a missing
// binary; the next pod works without leakguard; a pod added before the
// uninstall is deleted without a failing DEL.
func testUninstall(t *testing.T, e *env) {
	before := e.runPod(t, "before-uninstall")
	logs := e.followLogs(t, e.agentPod(t))
	defer func() {
		if t.Failed() {
			t.Logf("agent pod's logs:\n%s", logs())
		}
	}()
	cw := e.watchChain(t)
	e.c.MustKubectl(t, "delete", "-k", e.ov.Dir, "--wait=true", "--timeout=180s")
	e.installed = false
	deadline := time.Now().Add(60 * time.Second)
	for {
		entry, err := e.hasEntry()
		if err == nil && !entry && !e.hasBinary() {
			break
		}
		if time.Now().After(deadline) {
			cw.close()
			t.Fatalf("60 s after delete -k: entry %t (%v), binary %t; events:\n%s", entry, err, e.hasBinary(), strings.Join(cw.events, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The agent pod gone too.
	for {
		pods, err := e.c.ListPods(namespace, appLabel)
		if err == nil && len(pods) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DaemonSet pods left after delete -k: %d (%v)", len(pods), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the last events in
	cw.close()
	if cw.entryWithoutBinary > 0 || len(cw.loadErrors) > 0 {
		t.Errorf("during the uninstall: %d samples of an entry whose binary is missing, load errors %v", cw.entryWithoutBinary, cw.loadErrors)
	}
	// Kernel order: the last change of the conf file before the binary's
	// removal.
	conf, bin := e.c.CNI.ConfFile, e.binaryPath()
	lastConf, binGone := -1, -1
	for i, ev := range cw.events {
		if strings.HasSuffix(ev, " "+conf) {
			lastConf = i
		}
		if binGone < 0 && strings.HasSuffix(ev, " "+bin) && (strings.Contains(ev, "REMOVE") || strings.Contains(ev, "RENAME")) {
			binGone = i
		}
	}
	if lastConf < 0 || binGone < 0 || lastConf > binGone {
		t.Errorf("uninstall order: last conf file event #%d, binary removed #%d, want the entry first; events:\n%s", lastConf, binGone, strings.Join(cw.events, "\n"))
	}

	after := e.runPod(t, "after-uninstall")
	if e.record(t, after.Sandbox.ID) != nil || len(e.leakguardCalls(t, after.Sandbox.ID)) > 0 {
		t.Errorf("pod %s after the uninstall went through leakguard", after.Name)
	}
	for _, p := range []testPod{before, after} {
		e.deletePod(t, p)
		// DEL runs the chain backwards: a leakguard that fails stops it
		// before bridge, so no bridge DEL at all is a failed one too.
		calls := e.c.CNI.CallsFor(t, "bridge", "DEL", p.Sandbox.ID)
		if len(calls) == 0 {
			t.Errorf("pod %s: no bridge DEL ran", p.Name)
		}
		for _, k := range calls {
			if k.ExitCode != 0 {
				t.Errorf("pod %s: bridge DEL failed: %s", p.Name, k)
			}
		}
	}
	// Records of pods that were running at the uninstall stay until GC
	// (docs/kubernetes.md): the one of `before` is expected, nothing else.
	records, _ := e.c.CNI.Entries(t)
	for _, r := range records {
		if r.Record.ContainerID != before.Sandbox.ID {
			t.Errorf("record left after uninstall: %s (%s)", r.Path, r.Record.ContainerID)
		}
	}
	// Every sandbox left is one kubelet stopped (none stuck in a failing DEL).
	out := e.c.Containerd.Crictl.MustRun(t, "pods", "--state", "ready", "-q")
	for _, id := range strings.Fields(out) {
		if id == before.Sandbox.ID || id == after.Sandbox.ID {
			t.Errorf("sandbox %s still ready after its pod was deleted", id)
		}
	}
}
