package k8s

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/test/cnitest"
	"github.com/leakguard/leakguard/test/kube"
	"github.com/leakguard/leakguard/test/runtime"
)

// env is the package's cluster and the leakguard install on it.
type env struct {
	c  *kube.Cluster
	ov *overlay
	// installed: the DaemonSet is applied and was Ready (Install ran).
	installed bool
}

// testPod is a pod the tests started and the CRI sandbox behind it.
type testPod struct {
	Name    string
	Pod     kube.Pod
	Sandbox runtime.PodStatus
}

// runPod starts a busybox pod on the pod network (`kubectl run`) and waits
// until it runs.
func (e *env) runPod(t testing.TB, prefix string) testPod {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, rand.IntN(1e6))
	e.c.MustKubectl(t, "run", name, "--image="+runtime.BusyboxImage, "--restart=Never", "--", "sleep", "3600")
	p := e.c.WaitPod(t, "default", name, 90*time.Second, kube.PodRunningReady)
	return testPod{Name: name, Pod: p, Sandbox: e.c.Sandbox(t, p.Metadata.UID)}
}

// deletePod deletes a pod and waits until it is gone from the API (its
// sandbox stopped: CNI DEL ran).
func (e *env) deletePod(t testing.TB, p testPod) {
	t.Helper()
	e.c.MustKubectl(t, "delete", "pod", p.Name, "--wait=true", "--timeout=90s", "--grace-period=1")
}

// record returns leakguard's live record for a sandbox, nil if none.
func (e *env) record(t testing.TB, sandboxID string) *store.Entry {
	t.Helper()
	records, _ := e.c.CNI.Entries(t)
	for i := range records {
		if records[i].Record.ContainerID == sandboxID {
			return &records[i]
		}
	}
	return nil
}

// leakguardCalls returns the commands (ADD, DEL...) leakguard logged for a
// sandbox (the overlay points its logFile at the CNI's private log).
func (e *env) leakguardCalls(t testing.TB, sandboxID string) []string {
	t.Helper()
	var cmds []string
	for _, rec := range e.c.CNI.LeakguardLogLines(t, sandboxID) {
		if cmd, ok := rec["cmd"].(string); ok && !slices.Contains(cmds, cmd) {
			cmds = append(cmds, cmd)
		}
	}
	return cmds
}

// chain loads the conf dir as containerd does: the first file's plugin
// types, and its name.
func (e *env) chain() ([]string, string, error) {
	list, file, err := cnitest.LoadFirst(e.c.CNI.ConfDir)
	if err != nil {
		return nil, "", err
	}
	return cnitest.PluginTypes(list), file, nil
}

// hasEntry reports whether the chain containerd loads ends with leakguard.
func (e *env) hasEntry() (bool, error) {
	types, _, err := e.chain()
	if err != nil {
		return false, err
	}
	return len(types) > 0 && types[len(types)-1] == "leakguard", nil
}

func (e *env) binaryPath() string { return filepath.Join(e.c.CNI.BinDir, "leakguard") }

func (e *env) hasBinary() bool {
	fi, err := os.Stat(e.binaryPath())
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// waitEntry waits until the chain holds leakguard (or, want false, not).
func (e *env) waitEntry(t testing.TB, want bool, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < timeout {
		got, err := e.hasEntry()
		if err == nil && got == want {
			return time.Since(start)
		}
		last = err
		time.Sleep(2 * time.Millisecond)
	}
	types, file, _ := e.chain()
	t.Fatalf("chain entry present=%t not reached in %v (first file %s: %v, last error %v)", want, timeout, file, types, last)
	return 0
}

// agentPod returns the DaemonSet's pod (the newest if several).
func (e *env) agentPod(t testing.TB) kube.Pod {
	t.Helper()
	pods, err := e.c.ListPods(namespace, appLabel)
	if err != nil {
		t.Fatal(err)
	}
	var live []kube.Pod
	for _, p := range pods {
		if p.Metadata.DeletionTimestamp == "" {
			live = append(live, p)
		}
	}
	if len(live) != 1 {
		t.Fatalf("%d live pods of the DaemonSet, want 1", len(live))
	}
	return live[0]
}

// waitAgentReady waits until the DaemonSet has its one pod Running and
// Ready.
func (e *env) waitAgentReady(t testing.TB, timeout time.Duration) kube.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pods, err := e.c.ListPods(namespace, appLabel)
		if err == nil && len(pods) == 1 && pods[0].Metadata.DeletionTimestamp == "" && kube.PodRunningReady(pods[0]) == nil {
			return pods[0]
		}
		if time.Now().After(deadline) {
			out, _ := e.c.Kubectl("describe", "pods", "-n", namespace, "-l", appLabel)
			logs, _ := e.c.Kubectl("logs", "-n", namespace, "-l", appLabel, "--all-containers", "--tail=40")
			t.Fatalf("DaemonSet pod not Running and Ready in %v (%v):\n%s\nlogs:\n%s", timeout, err, out, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// followLogs streams the logs of every container of a pod (kubectl logs
// -f) until they exit; the returned func gives what came so far.
func (e *env) followLogs(t testing.TB, pod kube.Pod) func() string {
	t.Helper()
	var mu sync.Mutex
	var buf strings.Builder
	for _, ctr := range []string{"agent", "nri"} {
		cmd := exec.Command(e.c.Tools.Kubectl, "logs", "-f", "-n", pod.Metadata.Namespace, pod.Metadata.Name, "-c", ctr)
		cmd.Env = e.c.KubectlEnv()
		w := &lockedWriter{mu: &mu, b: &buf, prefix: ctr + ": "}
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
}

type lockedWriter struct {
	mu     *sync.Mutex
	b      *strings.Builder
	prefix string
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line != "" {
			w.b.WriteString(w.prefix + line)
		}
	}
	return len(p), nil
}

// metrics scrapes the agent's /metrics (hostNetwork: on the node's
// loopback) into sample name{labels} → value.
func (e *env) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.ov.Port))
	if err != nil {
		t.Fatalf("scrape the agent: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("scrape the agent: %s: %s", resp.Status, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return out
}
