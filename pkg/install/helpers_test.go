package install_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/install"
	"github.com/leakguard/leakguard/test/cnitest"
)

// node is a throw-away node: a conf dir, a bin dir and the dir binaries are
// installed from, all under a temp dir.
type node struct {
	t               *testing.T
	root            string
	conf, bin, from string
	log             *syncBuffer
}

func newNode(t *testing.T) *node {
	t.Helper()
	root := t.TempDir()
	n := &node{
		t: t, root: root,
		conf: filepath.Join(root, "net.d"), bin: filepath.Join(root, "bin"), from: filepath.Join(root, "from"),
		log: &syncBuffer{},
	}
	for _, d := range []string{n.conf, n.bin, n.from} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{install.PluginType, install.HookBinary, install.NRIBinary} {
		n.writeFrom(b, "#!/bin/sh\n# "+b+" v1\n")
	}
	return n
}

func (n *node) writeFrom(name, content string) {
	n.t.Helper()
	if err := os.WriteFile(filepath.Join(n.from, name), []byte(content), 0o755); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) opts() install.Options {
	return install.Options{
		ConfDir: n.conf, BinDir: n.bin, From: n.from,
		Log: slog.New(slog.NewJSONHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (n *node) installer(opts install.Options) *install.Installer {
	n.t.Helper()
	in, err := install.New(opts)
	if err != nil {
		n.t.Fatalf("New: %v", err)
	}
	return in
}

// write puts a config file in the conf dir directly (as a careless agent
// or an operator would).
func (n *node) write(name, content string) {
	n.t.Helper()
	if err := os.WriteFile(filepath.Join(n.conf, name), []byte(content), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// rewriteByRename replaces a config file as most agents do: a temp file
// elsewhere in the dir, renamed over it.
func (n *node) rewriteByRename(name, content string) {
	n.t.Helper()
	tmp := filepath.Join(n.conf, ".agent-tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		n.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(n.conf, name)); err != nil {
		n.t.Fatal(err)
	}
}

// rewriteInPlace truncates and writes the file (some agents do).
func (n *node) rewriteInPlace(name, content string) {
	n.t.Helper()
	f, err := os.OpenFile(filepath.Join(n.conf, name), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		n.t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		n.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) read(name string) string {
	n.t.Helper()
	b, err := os.ReadFile(filepath.Join(n.conf, name))
	if err != nil {
		n.t.Fatal(err)
	}
	return string(b)
}

func (n *node) exists(name string) bool {
	_, err := os.Lstat(filepath.Join(n.conf, name))
	return err == nil
}

// chain returns the plugin types of the config file, decoded as JSON.
func (n *node) chain(name string) []string {
	n.t.Helper()
	var c struct {
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(n.read(name)), &c); err != nil {
		n.t.Fatalf("%s: %v", name, err)
	}
	var ts []string
	for _, p := range c.Plugins {
		ts = append(ts, p.Type)
	}
	return ts
}

// runtimeChain is what containerd would run: the first file's chain.
func (n *node) runtimeChain() (string, string) {
	n.t.Helper()
	list, file, err := cnitest.LoadFirst(n.conf)
	if err != nil {
		n.t.Fatalf("conf dir does not load: %v", err)
	}
	return file, strings.Join(cnitest.PluginTypes(list), ",")
}

// ino is the inode of a file: a write by rename changes it.
func ino(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// watch runs in.Watch until the test ends.
func watch(t *testing.T, in *install.Installer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Watch returned %v, want context.Canceled", err)
		}
	})
}

// waitFor polls cond every 2 ms until it holds or timeout passes, and
// returns how long it took.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// records returns the decoded log lines whose msg contains msg.
func (s *syncBuffer) records(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(s.String(), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && strings.Contains(r["msg"].(string), msg) {
			out = append(out, r)
		}
	}
	return out
}

const bridgeList = `{
  "cniVersion": "1.0.0",
  "name": "podnet",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

const ptpConf = `{
  "cniVersion": "0.4.0",
  "name": "ptpnet",
  "type": "ptp",
  "mtu": 1460,
  "ipam": {"type": "host-local", "subnet": "10.99.0.0/16"}
}
`

// readOnly bind-mounts dir read-only over itself until makeWritable or the
// end of the test: writes fail with EROFS, even for root.
func readOnly(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", dir, err)
	}
}

func makeWritable(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		t.Fatalf("unmount %s: %v", dir, err)
	}
}
