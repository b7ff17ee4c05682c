package k8s

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/leakguard/leakguard/test/runtime"
)

// reinsertBudget is issue 10's bound: re-inserted within a second.
const reinsertBudget = time.Second

// primaryWithout is the node's primary as its CNI agent writes it: the
// bridge alone.
func (e *env) primaryWithout(t testing.TB) []byte {
	t.Helper()
	raw, err := e.c.CNI.Conflist(runtime.ChainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// writeRename writes a conf file as agents do: a temp file in the dir (a
// name no runtime loads) renamed over it.
func writeRename(t testing.TB, path string, raw []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".agent-tmp")
	if err := os.WriteFile(tmp, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// writeInPlace truncates and rewrites a conf file in place.
func writeInPlace(t testing.TB, path string, raw []byte) {
	t.Helper()
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkNextPodRecorded runs a pod, wants a leakguard record for it (the
// chain containerd loaded ran leakguard), and deletes it.
func (e *env) checkNextPodRecorded(t testing.TB, prefix string) {
	t.Helper()
	p := e.runPod(t, prefix)
	if e.record(t, p.Sandbox.ID) == nil {
		t.Errorf("pod %s after the rewrite has no leakguard record", podDescription(p))
	}
	e.deletePod(t, p)
}

// rewrite rewrites the primary without leakguard and waits for the
// installer to put it back, returning how long it took.
func (e *env) rewrite(t testing.TB, inPlace bool) time.Duration {
	t.Helper()
	raw := e.primaryWithout(t)
	start := time.Now()
	if inPlace {
		writeInPlace(t, e.c.CNI.ConfFile, raw)
	} else {
		writeRename(t, e.c.CNI.ConfFile, raw)
	}
	e.waitEntry(t, true, entryTimeout)
	return time.Since(start)
}

// testRewriteRename: the primary's agent replaces its file (temp + rename)
// without leakguard → re-inserted within a second; the next pod has a
// record.
func testRewriteRename(t *testing.T, e *env) {
	if d := e.rewrite(t, false); d > reinsertBudget {
		t.Errorf("re-inserted after %v, want within %v", d, reinsertBudget)
	} else {
		t.Logf("re-inserted after a rename in %v", d)
	}
	e.checkNextPodRecorded(t, "after-rename")
}

// testRewriteInPlace: the same with an in-place rewrite (O_TRUNC).
func testRewriteInPlace(t *testing.T, e *env) {
	if d := e.rewrite(t, true); d > reinsertBudget {
		t.Errorf("re-inserted after %v, want within %v", d, reinsertBudget)
	} else {
		t.Logf("re-inserted after an in-place write in %v", d)
	}
	e.checkNextPodRecorded(t, "after-inplace")
}

// testReinsertionLatency prints the re-insertion latency figures over 40
// rewrites (half rename, half in place) by the DaemonSet's installer on the
// cluster (its revert burst raised by the overlay). Figures, not assertions (issue 10's benchmark: median ≤ 100 ms,
// p95 ≤ 1 s).
func testReinsertionLatency(t *testing.T, e *env) {
	var ds []time.Duration
	for i := range 40 {
		ds = append(ds, e.rewrite(t, i%2 == 1))
		time.Sleep(50 * time.Millisecond)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	t.Logf("re-insertion latency on the cluster over %d rewrites: median %v, p95 %v, max %v",
		len(ds), ds[len(ds)/2], ds[len(ds)*95/100], ds[len(ds)-1])
}

// extraConf writes a conf file into the node's conf dir and registers its
// removal (and of what the installer may turn it into).
func (e *env) extraConf(t testing.TB, name string, raw []byte) string {
	t.Helper()
	path := filepath.Join(e.c.CNI.ConfDir, name)
	t.Cleanup(func() {
		base := path[:len(path)-len(filepath.Ext(path))]
		for _, ext := range []string{".conf", ".conflist", ".json"} {
			if err := os.Remove(base + ext); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("remove %s: %v", base+ext, err)
			}
		}
		// containerd reloads on a write, not on a removal: rewrite the
		// node's primary in place (the installer keeps its entry).
		if raw, err := os.ReadFile(e.c.CNI.ConfFile); err == nil {
			_ = os.WriteFile(e.c.CNI.ConfFile, raw, 0o644)
		}
	})
	writeRename(t, path, raw)
	return path
}

// singleConf is the primary as a single-plugin .conf of a given version.
func (e *env) singleConf(t testing.TB, version string) []byte {
	t.Helper()
	var list struct {
		Name    string           `json:"name"`
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(e.primaryWithout(t), &list); err != nil {
		t.Fatal(err)
	}
	conf := list.Plugins[0]
	conf["name"], conf["cniVersion"] = list.Name, version
	raw, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// testConfToConflist: a .conf primary appears (first in runtime order) →
// the installer turns it into a .conflist of the same name and cniVersion
// with leakguard last, the .conf gone; the next pod has a record.
func testConfToConflist(t *testing.T, e *env) {
	conf := e.extraConf(t, "05-single.conf", e.singleConf(t, "1.0.0"))
	conflist := conf + "list"
	deadline := time.Now().Add(entryTimeout)
	for {
		_, errConf := os.Stat(conf)
		types, file, err := e.chain()
		if errors.Is(errConf, os.ErrNotExist) && err == nil && file == filepath.Base(conflist) && slices.Equal(types, []string{"bridge", "leakguard"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: .conf present: %t, first file %s %v (%v)", entryTimeout, errConf == nil, file, types, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var got struct {
		Name       string `json:"name"`
		CNIVersion string `json:"cniVersion"`
	}
	raw, err := os.ReadFile(conflist)
	if err == nil {
		err = json.Unmarshal(raw, &got)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != e.c.Network.Name || got.CNIVersion != "1.0.0" {
		t.Errorf("converted %s: name %q cniVersion %q, want %q and 1.0.0", filepath.Base(conflist), got.Name, got.CNIVersion, e.c.Network.Name)
	}
	e.checkNextPodRecorded(t, "after-conf")
}

// testTwoPrimaries: a second primary sorting first appears → leakguard
// goes into it (runtime order, not the file edited before), and a third
// sorting before both → into that one; the next pod (containerd loads the
// first) has a record.
func testTwoPrimaries(t *testing.T, e *env) {
	raw := e.primaryWithout(t)
	for _, name := range []string{"02-second.conflist", "01-first.conflist"} {
		e.extraConf(t, name, raw)
		deadline := time.Now().Add(entryTimeout)
		for {
			types, file, err := e.chain()
			if err == nil && file == name && slices.Equal(types, []string{"bridge", "leakguard"}) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %v: first file %s %v (%v), want %s with leakguard", entryTimeout, file, types, err, name)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	e.checkNextPodRecorded(t, "two-primaries")
}
