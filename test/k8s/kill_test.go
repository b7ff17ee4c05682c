package k8s

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/leakguard/leakguard/test/cnitest"
	"github.com/leakguard/leakguard/test/runtime/cnicall"
)

// killRounds is issue 10's count.
const killRounds = 100

// testKillInstaller: the installer (leakguardctl install --watch, the
// DaemonSet's binary, run on the node after the uninstall) SIGKILLed at a
// random moment while the primary is rewritten by its agent (rename and in
// place), 100 rounds → after every round the node's conf dir loads with
// libcni as containerd loads it (never half-written, never missing), with
// no temp file a runtime would load; the last installer's chain then works
// for a pod, and uninstall restores the node.
func testKillInstaller(t *testing.T, e *env) {
	ctl := filepath.Join(binDir(), "leakguardctl")
	pluginConf, err := json.Marshal(map[string]any{"stateDir": e.c.CNI.StateDir, "logFile": e.c.CNI.LogFile, "logLevel": "debug"})
	if err != nil {
		t.Fatal(err)
	}
	dirs := []string{"--cni-conf-dir", e.c.CNI.ConfDir, "--cni-bin-dir", e.c.CNI.BinDir}
	// No re-insertion rate limit in reach: the installer fights the agent
	// for the whole round, so kills land among its writes.
	args := append(slices.Clone(dirs), "--plugin-config", string(pluginConf), "--revert-burst", "1000")
	primary := e.primaryWithout(t)
	inserted, roundsWritten, writes := 0, 0, 0
	for round := range killRounds {
		cmd := exec.Command(ctl, append([]string{"install", "--watch"}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // the primary's agent
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if i%2 == 0 {
					writeRename(t, e.c.CNI.ConfFile, primary)
				} else {
					writeInPlace(t, e.c.CNI.ConfFile, primary)
				}
				time.Sleep(time.Duration(1+rand.IntN(20)) * time.Millisecond)
			}
		}()
		time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		close(stop)
		wg.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: the installer exited on its own (%v): %s", round, err, stderr.String())
		}
		if n := strings.Count(stderr.String(), `"msg":"wrote leakguard's entry"`); n > 0 {
			roundsWritten++
			writes += n
		}
		list, file, err := cnitest.LoadFirst(e.c.CNI.ConfDir)
		if err != nil {
			t.Fatalf("round %d: the conf dir does not load: %v", round, err)
		}
		if file != filepath.Base(e.c.CNI.ConfFile) {
			t.Fatalf("round %d: containerd would load %s, not the primary", round, file)
		}
		if types := cnitest.PluginTypes(list); types[len(types)-1] == "leakguard" {
			inserted++
		}
		// The agent's last write was complete; the installer's temp files
		// (if the kill left one) must carry no name a runtime loads.
		entries, err := os.ReadDir(e.c.CNI.ConfDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, ent := range entries {
			if ext := filepath.Ext(ent.Name()); ent.Name() != filepath.Base(e.c.CNI.ConfFile) && (ext == ".conf" || ext == ".conflist" || ext == ".json") {
				t.Fatalf("round %d: %s in the conf dir", round, ent.Name())
			}
		}
	}
	t.Logf("%d rounds: the installer wrote in %d of them (%d writes of the conf file); leakguard was in the chain after %d kills, absent (the agent wrote last) after %d",
		killRounds, roundsWritten, writes, inserted, killRounds-inserted)
	if roundsWritten < killRounds/4 {
		// Most kills came before the installer's first write: they say
		// little about a kill during one.
		t.Errorf("the installer wrote the conf file in only %d of %d rounds", roundsWritten, killRounds)
	}
	if inserted == 0 {
		// No kill came after a write of the installer: the rounds proved
		// nothing about a kill during one.
		t.Errorf("the installer inserted leakguard in none of the %d rounds", killRounds)
	}

	// One installer to the end: the node's chain then works for a pod.
	if out, err := exec.Command(ctl, append([]string{"install"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("leakguardctl install: %v\n%s", err, out)
	}
	p := e.runPod(t, "after-kills")
	if e.record(t, p.Sandbox.ID) == nil {
		t.Errorf("pod %s after the kill rounds has no record", p.Name)
	}
	e.deletePod(t, p)
	if out, err := exec.Command(ctl, append([]string{"uninstall"}, dirs...)...).CombinedOutput(); err != nil {
		t.Fatalf("leakguardctl uninstall: %v\n%s", err, out)
	}
	if entry, err := e.hasEntry(); err != nil || entry || e.hasBinary() {
		t.Errorf("after uninstall: entry %t (%v), binary %t", entry, err, e.hasBinary())
	}
	// Nothing a killed copy left in the bin dir (temp binaries are swept by
	// the next installer).
	entries, err := os.ReadDir(e.c.CNI.BinDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range entries {
		if !slices.Contains([]string{"bridge", "host-local", "loopback", cnicall.SpyDir}, ent.Name()) {
			t.Errorf("left in the CNI bin dir: %s", ent.Name())
		}
	}
}

// binDir holds the built binaries ($LEAKGUARD_BIN_DIR or <repo>/bin).
func binDir() string {
	if d := os.Getenv("LEAKGUARD_BIN_DIR"); d != "" {
		return d
	}
	return filepath.Join(repoRoot, "bin")
}
