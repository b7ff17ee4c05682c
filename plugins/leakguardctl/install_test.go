package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/leakguard/leakguard/test/cnitest"
)

// confNode is a conf dir, a bin dir and a dir of binaries to install.
type confNode struct {
	t               *testing.T
	conf, bin, from string
}

const primaryList = `{
  "cniVersion": "1.0.0",
  "name": "podnet",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.88.0.0/16"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

const fakePlugin = "#!/bin/sh\n# stands in for the leakguard plugin\n"

func newConfNode(t *testing.T) *confNode {
	t.Helper()
	root := t.TempDir()
	n := &confNode{t: t, conf: filepath.Join(root, "net.d"), bin: filepath.Join(root, "bin"), from: filepath.Join(root, "from")}
	for _, d := range []string{n.conf, n.bin, n.from} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(n.from, "leakguard"), []byte(fakePlugin), 0o755); err != nil {
		t.Fatal(err)
	}
	n.agentWrite("10-a.conflist", primaryList)
	return n
}

func (n *confNode) dirs(args ...string) []string {
	return append(args, "--cni-conf-dir", n.conf, "--cni-bin-dir", n.bin, "--from", n.from)
}

// agentWrite rewrites a config file as a CNI agent does: temp + rename.
func (n *confNode) agentWrite(name, content string) {
	tmp := filepath.Join(n.conf, ".agent.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		n.t.Error(err)
		return
	}
	if err := os.Rename(tmp, filepath.Join(n.conf, name)); err != nil {
		n.t.Error(err)
	}
}

// runCtl runs leakguardctl and returns stdout, stderr and the exit code.
func runCtl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// lgEntries counts leakguard entries in the config runtimes load.
func lgEntries(t *testing.T, conf string) (int, string) {
	t.Helper()
	list, file, err := cnitest.LoadFirst(conf)
	if err != nil {
		t.Fatalf("the conf dir does not load: %v", err)
	}
	n := 0
	for _, ty := range cnitest.PluginTypes(list) {
		if ty == "leakguard" {
			n++
		}
	}
	return n, file
}

// Bad input is a usage error (exit 2) that says what is wrong.
func TestInstallUsageErrors(t *testing.T) {
	n := newConfNode(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{n.dirs("install", "--plugin-config", `{"logLevel":`), "--plugin-config: not a JSON object"},
		{n.dirs("install", "--plugin-config", `{"logLevel":"loud"}`), "logLevel"},
		{n.dirs("install", "--plugin-config", `{"stateDirr":"/run/x"}`), `unknown key "stateDirr"`},
		{n.dirs("install", "--no-such-flag"), "flag provided but not defined: -no-such-flag"},
		{n.dirs("install", "--primary", "../x.conflist"), "plain file name"},
		{n.dirs("install", "--own-file", "--own-file-name", "00-lg.conf"), "must be a .conflist"},
		{[]string{"install", "--cni-conf-dir", "relative"}, "absolute path"},
		{[]string{"uninstall", "--watch"}, "flag provided but not defined: -watch"},
		{[]string{"serve", "--reap", "all"}, `--reap "all"`},
		{[]string{"serve", "--uninstall-on-delete"}, "--uninstall-on-delete needs --install"},
		{[]string{"serve", "--install", "--uninstall-on-delete", "--uninstall-timeout", "0s"}, "--uninstall-timeout"},
		{[]string{"serve", "--install", "--uninstall-on-delete", "--drain", "10s", "--uninstall-timeout", "10s"}, "--drain 10s must be shorter"},
		{[]string{"serve", "--install", "--plugin-config", "[]"}, "--plugin-config"},
	} {
		_, stderr, code := runCtl(t, tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("leakguardctl %v: exit %d, stderr %q; want 2 and %q", tt.args, code, stderr, tt.want)
		}
	}
	if got := readFile(t, filepath.Join(n.conf, "10-a.conflist")); got != primaryList {
		t.Error("a refused install touched the primary")
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// install (once) and uninstall, end to end.
func TestInstallOnceThenUninstall(t *testing.T) {
	n := newConfNode(t)
	stdout, stderr, code := runCtl(t, n.dirs("install", "--timeout", "10s", "--plugin-config", `{"logLevel":"debug"}`)...)
	if code != 0 || !strings.Contains(stdout, "leakguard is in the chain: 10-a.conflist") {
		t.Fatalf("install: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if c, file := lgEntries(t, n.conf); c != 1 || file != "10-a.conflist" {
		t.Fatalf("%d leakguard entries in %s", c, file)
	}
	if got := readFile(t, filepath.Join(n.bin, "leakguard")); got != fakePlugin {
		t.Fatalf("binary %q", got)
	}
	stdout, stderr, code = runCtl(t, "uninstall", "--cni-conf-dir", n.conf, "--cni-bin-dir", n.bin)
	if code != 0 || !strings.Contains(stdout, "removed leakguard's entry from") || !strings.Contains(stdout, filepath.Join(n.bin, "leakguard")) {
		t.Fatalf("uninstall: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if c, _ := lgEntries(t, n.conf); c != 0 {
		t.Fatal("entry left")
	}
	if _, err := os.Stat(filepath.Join(n.bin, "leakguard")); !os.IsNotExist(err) {
		t.Fatalf("binary left: %v", err)
	}
	// Without a primary, install waits, and --timeout ends the wait (exit 1).
	if err := os.Remove(filepath.Join(n.conf, "10-a.conflist")); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = runCtl(t, n.dirs("install", "--timeout", "300ms")...)
	if code != 1 || !strings.Contains(stderr, "no primary network config") {
		t.Fatalf("install with no primary: exit %d, %s", code, stderr)
	}
	if ents, _ := os.ReadDir(n.conf); len(ents) != 0 {
		t.Fatalf("a standalone config was written: %v", ents)
	}
}

// start runs leakguardctl in the background; stderr is collected.
func start(t *testing.T, args ...string) (*exec.Cmd, *syncBuf) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stderr syncBuf
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, &stderr
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func holdsEntry(conf string) bool {
	list, _, err := cnitest.LoadFirst(conf)
	if err != nil {
		return false
	}
	ts := cnitest.PluginTypes(list)
	return len(ts) > 0 && ts[len(ts)-1] == "leakguard"
}

// SIGTERM (a restart, an upgrade) stops install --watch with exit 0 and
// leaves the binary and the entry in place.
func TestInstallWatchSIGTERMKeepsEverything(t *testing.T) {
	n := newConfNode(t)
	cmd, stderr := start(t, n.dirs("install", "--watch")...)
	waitUntil(t, "the entry", func() bool { return holdsEntry(n.conf) })
	n.agentWrite("10-a.conflist", primaryList)
	waitUntil(t, "the entry back", func() bool { return holdsEntry(n.conf) })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("install --watch after SIGTERM: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "leakguard stays installed") {
		t.Errorf("stderr:\n%s", stderr)
	}
	if !holdsEntry(n.conf) {
		t.Fatal("entry removed on SIGTERM")
	}
	if got := readFile(t, filepath.Join(n.bin, "leakguard")); got != fakePlugin {
		t.Fatal("binary removed on SIGTERM")
	}
	var lines int
	for _, l := range strings.Split(stderr.String(), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(l), &r) == nil && r["msg"] == "re-inserting leakguard's entry: the file was rewritten without it" {
			lines++
		}
	}
	if lines != 1 {
		t.Errorf("%d re-insertion log lines, want 1:\n%s", lines, stderr)
	}
}

// SIGKILL of the installer at random moments while the primary's agent
// rewrites its file (by rename, as a .conflist and as a .conf), 100 rounds:
// after every round the conf dir loads the way containerd loads it, with
// the primary's chain first and at most one leakguard entry; the binary is
// absent or whole. A last install puts exactly one entry in.
func TestInstallerSIGKILLNeverBreaksTheConfDir(t *testing.T) {
	n := newConfNode(t)
	ptp := `{"cniVersion": "0.4.0", "name": "podnet", "type": "ptp", "ipam": {"type": "host-local", "subnet": "10.99.0.0/16"}}` + "\n"
	// A large primary (an agent's long annotations) makes every write take
	// long enough for kills to land inside some of them.
	big := strings.Replace(primaryList, `"name": "podnet",`, `"name": "podnet", "annotations": "`+strings.Repeat("x", 400<<10)+`",`, 1)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	killedWriting := 0
	for round := 0; round < 100; round++ {
		cmd, stderr := start(t, n.dirs("install", "--watch", "--revert-burst", "1000000", "--log-level", "debug")...)
		// The agent stops writing the moment the installer is killed, so
		// what is checked is what the killed installer left.
		var frozen atomic.Bool
		var wg sync.WaitGroup
		wg.Add(1)
		agentRng := rand.New(rand.NewSource(rng.Int63()))
		go func() {
			defer wg.Done()
			for i := 0; !frozen.Load(); i++ {
				if round%4 == 3 {
					// The agent owns a .conf; the installer converts it.
					n.agentWrite("10-a.conf", strings.Replace(ptp, "10.99.", fmt.Sprintf("10.%d.", 100+i%100), 1))
				} else {
					n.agentWrite("10-a.conflist", strings.Replace(big, "cni0", fmt.Sprintf("cni%d", i%100), 1))
				}
				time.Sleep(time.Duration(1+agentRng.Intn(4)) * time.Millisecond)
			}
		}()
		// Meanwhile, as a runtime reloading on every event would, read
		// every config file: each one read must parse (the agent writes by
		// rename, so a partial file would be the installer's).
		wg.Add(1)
		var partial atomic.Value
		go func() {
			defer wg.Done()
			for !frozen.Load() {
				if err := parseAll(n.conf); err != nil {
					partial.Store(err.Error())
				}
			}
		}()
		time.Sleep(time.Duration(rng.Intn(150)) * time.Millisecond)
		frozen.Store(true)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		wg.Wait()
		if p := partial.Load(); p != nil {
			t.Fatalf("round %d: a runtime reading the dir during the round read a config it cannot parse: %s", round, p)
		}
		if strings.Contains(stderr.String(), "wrote leakguard's entry") {
			killedWriting++
		}

		list, file, err := cnitest.LoadFirst(n.conf)
		if err != nil {
			t.Fatalf("round %d: the conf dir does not load: %v\ninstaller stderr:\n%s", round, err, stderr)
		}
		ts := cnitest.PluginTypes(list)
		if (ts[0] != "bridge" && ts[0] != "ptp") || list.Name != "podnet" {
			t.Fatalf("round %d: runtime loads %s: %v", round, file, ts)
		}
		c := 0
		for i, ty := range ts {
			if ty == "leakguard" {
				c++
				if i != len(ts)-1 {
					t.Fatalf("round %d: leakguard not last in %s: %v", round, file, ts)
				}
			}
		}
		if c > 1 {
			t.Fatalf("round %d: %d leakguard entries in %s", round, c, file)
		}
		if b, err := os.ReadFile(filepath.Join(n.bin, "leakguard")); err == nil && string(b) != fakePlugin {
			t.Fatalf("round %d: half-written binary %q", round, b)
		}
		files, _ := libcni.ConfFiles(n.conf, []string{".conf", ".conflist", ".json"})
		for _, f := range files {
			if base := filepath.Base(f); base != "10-a.conf" && base != "10-a.conflist" {
				t.Fatalf("round %d: unexpected loadable file %s", round, base)
			}
		}
	}
	t.Logf("%d of 100 rounds killed the installer after it had written an entry", killedWriting)
	if killedWriting < 10 {
		t.Errorf("only %d rounds reached a write before the kill: the rounds did not exercise it", killedWriting)
	}
	_, stderr, code := runCtl(t, n.dirs("install", "--timeout", "10s")...)
	if code != 0 {
		t.Fatalf("final install: exit %d\n%s", code, stderr)
	}
	if c, file := lgEntries(t, n.conf); c != 1 {
		t.Fatalf("%d leakguard entries in %s after the rounds", c, file)
	}
}

// freePort returns a loopback address nobody listens on.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// serve --install: the installer and the agent in one process; /readyz is
// 503 until the chain holds leakguard; SIGTERM leaves it installed.
func TestServeWithInstall(t *testing.T) {
	n := newConfNode(t)
	if err := os.Remove(filepath.Join(n.conf, "10-a.conflist")); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	cmd, stderr := start(t, n.dirs("serve", "--install", "--listen", addr, "--interval", "1s",
		"--state-dir", filepath.Join(t.TempDir(), "state"), "--nri-state", "")...)
	waitUntil(t, "/healthz", func() bool { code, _ := httpGet("http://" + addr + "/healthz"); return code == http.StatusOK })
	time.Sleep(1500 * time.Millisecond) // a scan round or two
	if code, body := httpGet("http://" + addr + "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no primary") {
		t.Fatalf("/readyz with no primary: %d %s", code, body)
	}
	n.agentWrite("10-a.conflist", primaryList)
	waitUntil(t, "/readyz", func() bool { code, _ := httpGet("http://" + addr + "/readyz"); return code == http.StatusOK })
	_, metrics := httpGet("http://" + addr + "/metrics")
	for _, want := range []string{"leakguard_chain_installed 1", "leakguard_chain_reinsertions_total 0", "leakguard_scans_total", `leakguard_build_info{`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, stderr)
	}
	if !holdsEntry(n.conf) {
		t.Fatal("entry removed on SIGTERM")
	}
}

// parseAll reads and parses every config file of dir as a runtime would; a
// file removed between the listing and the read (a .conf just converted) is
// skipped, as the runtime's next reload would.
func parseAll(dir string) error {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return err
		}
		if strings.HasSuffix(f, ".conflist") {
			_, err = libcni.ConfListFromBytes(b)
		} else {
			_, err = libcni.ConfFromBytes(b) //nolint:staticcheck // as go-cni reads .conf
		}
		if err != nil {
			return fmt.Errorf("%s (%d bytes): %w", filepath.Base(f), len(b), err)
		}
	}
	return nil
}

// gc reaps the record whose netns leaked (its host link with it) and keeps
// the live pod's; the unrecorded leak is not GC's.
func TestGCCommand(t *testing.T) {
	n := newNode(t)
	out, code := n.run("gc", "--state-dir", n.stateDir)
	if code != 0 || !strings.Contains(out, "GC reaped 1 stale attachment(s)") {
		t.Fatalf("gc: exit %d\n%s", code, out)
	}
	n.mustHave("lgc-orphan", "lgc-live")
	out, code = n.run("records", "--json", "--state-dir", n.stateDir)
	if code != 0 || strings.Contains(out, "ctr-owned") || !strings.Contains(out, "ctr-live") {
		t.Fatalf("records after gc: exit %d\n%s", code, out)
	}
	out, code = n.run("gc", "--json", "--state-dir", n.stateDir)
	var res struct {
		Reaped *int     `json:"reaped"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || res.Reaped == nil || *res.Reaped != 0 || len(res.Errors) != 0 {
		t.Fatalf("second gc --json: exit %d, %v\n%s", code, err, out)
	}
}
