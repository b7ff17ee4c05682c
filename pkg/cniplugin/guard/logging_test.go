package guard_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"
)

// logLines reads a JSON log file and fails on any line that repeats a key.
func logLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if dup := repeatedKey(sc.Bytes()); dup != "" {
			t.Errorf("key %q repeated in log line %s", dup, sc.Text())
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

// repeatedKey returns the first top-level key of a JSON object that appears
// twice (encoding/json would silently keep the last).
func repeatedKey(line []byte) string {
	dec := json.NewDecoder(bytes.NewReader(line))
	if _, err := dec.Token(); err != nil {
		return ""
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		k, _ := tok.(string)
		if seen[k] {
			return k
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ""
		}
	}
	return ""
}

// Every line GC, DEL and rescue write names each key once (GC used to log
// containerID="" before the real one, and ifname and pin twice).
func TestLogLinesNameEachKeyOnce(t *testing.T) {
	f := newFixture(t)
	f.pinFixture()
	logFile := filepath.Join(t.TempDir(), "leakguard.log")
	f.extra["logFile"], f.extra["logLevel"] = logFile, "debug"
	f.add("1.1.0")
	g := f.sibling()
	g.add("1.1.0")
	// f: stale in GC's list, reaped through its pin; g: DEL with its netns alive.
	if err := f.gc(map[string]any{"cni.dev/valid-attachments": []map[string]string{{"containerID": g.cid, "ifname": "eth0"}}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if err := g.del(g.podPath, "1.1.0", g.prevResult()); err != nil {
		t.Fatal(err)
	}
	lines := logLines(t, logFile)
	var reaping bool
	for _, l := range lines {
		if l["msg"] == "GC: reaping stale attachment" {
			reaping = l["containerID"] == f.cid && l["ifname"] == "eth0"
		}
	}
	if !reaping {
		t.Errorf("no GC line names the reaped attachment %s/eth0 in %d lines", f.cid, len(lines))
	}
}

// A verb's returned error is logged exactly once, whatever failed; a config
// that cannot be parsed at all is reported on stderr.
func TestVerbFailureLoggedOnce(t *testing.T) {
	f := newFixture(t)
	logFile := filepath.Join(t.TempDir(), "leakguard.log")
	f.extra = map[string]any{"logFile": logFile}
	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]*skel.CmdArgs{
		"no prevResult":      f.args(f.podPath, f.conf("1.0.0", nil, nil)),
		"netns missing":      f.args(filepath.Join(t.TempDir(), "gone"), f.conf("1.0.0", f.prevResult(), nil)),
		"state dir unusable": f.args(f.podPath, f.conf("1.0.0", f.prevResult(), map[string]any{"stateDir": filepath.Join(blocked, "state")})),
	}
	for name, a := range cases {
		if err := os.Truncate(logFile, 0); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if _, err := f.tryAdd(a); err == nil {
			t.Fatalf("%s: ADD succeeded", name)
		}
		n := 0
		for _, l := range logLines(t, logFile) {
			if l["level"] == "ERROR" {
				n++
				if l["msg"] != "ADD failed" || l["err"] == "" {
					t.Errorf("%s: error line %v, want \"ADD failed\" with err", name, l)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s: %d error lines, want exactly 1", name, n)
		}
	}

	var stderr strings.Builder
	f.plugin.Stderr = &stderr
	a := f.args(f.podPath, []byte(`{"cniVersion":"1.0.0","name":"x","stateDir":7}`))
	_ = f.node.Do(func(ns.NetNS) error { return f.plugin.Add(a) })
	if !strings.Contains(stderr.String(), "ADD failed") || !strings.Contains(stderr.String(), "stateDir") {
		t.Errorf("unparsable config: stderr %q, want the failure naming stateDir", stderr.String())
	}
}
