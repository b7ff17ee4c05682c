package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"

	"github.com/leakguard/leakguard/pkg/hook/nristate"
	"github.com/leakguard/leakguard/test/nritest"
)

// bin is the leakguard-nri binary under test: $LEAKGUARD_BIN_DIR's (make
// test builds it) or one built here.
var bin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if dir := os.Getenv("LEAKGUARD_BIN_DIR"); dir != "" {
		if p := filepath.Join(dir, "leakguard-nri"); isFile(p) {
			bin = p
			return m.Run()
		}
	}
	tmp, err := os.MkdirTemp("", "leakguard-nri-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	bin = filepath.Join(tmp, "leakguard-nri")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as shipped: runs with an empty environment
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "failed to build leakguard-nri: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// Bad command lines, bad identities and unusable hooks exit 2 with a message
// naming the problem, before any connection is tried.
func TestExitCodes(t *testing.T) {
	hook := nritest.FakeHook(t)
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missingSock := filepath.Join(t.TempDir(), "none.sock")
	ok := []string{"--hook-path", hook, "--socket", missingSock}
	tests := []struct {
		name string
		args []string
		env  []string
		code int
		want string
	}{
		{"help", []string{"-h"}, nil, 0, `createRuntime hook (default "/usr/libexec/leakguard/leakguard-hook")`},
		{"unknown flag", append(ok, "--bogus"), nil, 2, "flag provided but not defined: -bogus"},
		{"flag without value", []string{"--hook-path"}, nil, 2, "flag needs an argument"},
		{"positional argument", append(ok, "extra"), nil, 2, `unexpected argument "extra"`},
		{"idx one digit", append(ok, "--idx", "1"), nil, 2, `invalid plugin index "1", must be 2 digits`},
		{"idx three digits", append(ok, "--idx", "100"), nil, 2, `invalid plugin index "100"`},
		{"idx letters", append(ok, "--idx", "a1"), nil, 2, `invalid plugin index "a1" (not [0-9][0-9])`},
		{"name empty", append(ok, "--name", ""), nil, 2, "invalid plugin name: name is empty"},
		{"name slash", append(ok, "--name", "leak/guard"), nil, 2, `invalid plugin name "leak/guard": contains invalid character '/'`},
		{"log level", append(ok, "--log-level", "loud"), nil, 2, `log level "loud" is not one of debug, info, warn, error`},
		{"relative socket", []string{"--hook-path", hook, "--socket", "nri.sock"}, nil, 2, `socket "nri.sock" is not an absolute path`},
		{"hook missing", []string{"--hook-path", "/nonexistent/leakguard-hook", "--socket", missingSock}, nil, 2, `hook "/nonexistent/leakguard-hook" does not exist`},
		{"hook not executable", []string{"--hook-path", plain, "--socket", missingSock}, nil, 2, "is not executable (mode 0644)"},
		{"hook is a directory", []string{"--hook-path", t.TempDir(), "--socket", missingSock}, nil, 2, "is not a regular file"},
		{"identity env without socket", ok, []string{"NRI_PLUGIN_IDX=10"}, 2, "NRI_PLUGIN_IDX or NRI_PLUGIN_NAME is set without NRI_PLUGIN_SOCKET"},
		{"--socket when pre-installed", []string{"--socket", missingSock}, []string{"NRI_PLUGIN_SOCKET=3", "NRI_PLUGIN_IDX=10", "NRI_PLUGIN_NAME=leakguard-nri"}, 2, "--socket cannot be used when the runtime starts the plugin"},
		{"--idx when pre-installed", []string{"--idx", "20"}, []string{"NRI_PLUGIN_SOCKET=3", "NRI_PLUGIN_IDX=10", "NRI_PLUGIN_NAME=leakguard-nri"}, 2, "--idx cannot be used"},
		{"bad index from the runtime", nil, []string{"NRI_PLUGIN_SOCKET=3", "NRI_PLUGIN_IDX=1", "NRI_PLUGIN_NAME=leakguard-nri"}, 2, "NRI_PLUGIN_IDX from the runtime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, tt.args...)
			cmd.Env = tt.env
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tt.code, tt.want)
			}
		})
	}
}

// external runs the binary as an external plugin; its log goes to a file.
type external struct {
	cmd  *exec.Cmd
	log  string
	done chan int
}

func startExternal(t *testing.T, sock, hook string) *external {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "nri.log")
	cmd := exec.Command(bin, "--socket", sock, "--hook-path", hook, "--log-level", "debug", "--log-file", logFile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e := &external{cmd: cmd, log: logFile, done: make(chan int, 1)}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
			if code < 0 {
				code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
			}
		}
		e.done <- code
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("plugin log:\n%s\nstderr:\n%s", b, stderr.String())
		}
	})
	return e
}

// stop sends SIGTERM and returns the exit code.
func (e *external) stop(t *testing.T) int {
	t.Helper()
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-e.done:
		return code
	case <-time.After(10 * time.Second):
		t.Fatal("leakguard-nri did not exit on SIGTERM")
		return -1
	}
}

func (e *external) lines(t *testing.T, substr string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(e.log)
	if err != nil {
		t.Fatal(err)
	}
	return nritest.Records(t, string(b), substr)
}

func waitLines(t *testing.T, e *external, substr string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l := e.lines(t, substr); len(l) >= n {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d log line(s) %q within 5s", n, substr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func wantHook(t *testing.T, resp *api.CreateContainerResponse, hook string) {
	t.Helper()
	cr := resp.GetAdjust().GetHooks().GetCreateRuntime()
	if len(cr) != 1 || cr[0].Path != hook || strings.Join(cr[0].Args, " ") != "leakguard-hook" {
		t.Fatalf("createRuntime hooks %v; want one, %s", cr, hook)
	}
}

// The binary as an external plugin: it injects the hook, logs its counters
// and CreateContainer latency on SIGUSR1, and exits 0 on SIGTERM. Stopped,
// it blocks nothing: the runtime creates containers without it; started
// again, it reports the containers that started meanwhile.
func TestExternal(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nri.sock")
	hook := nritest.FakeHook(t)
	rt := nritest.Start(t, sock, nil)
	e := startExternal(t, sock, hook)
	rt.WaitJoined(1, 10*time.Second)

	first, err := rt.Create("c1", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantHook(t, first, hook)

	if err := e.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	st := waitLines(t, e, "leakguard-nri stats", 1)[0]
	if st["injected"] != 1.0 || st["create_count"] != 1.0 || st["create_p99_us"].(float64) <= 0 || st["connected"] != true {
		t.Fatalf("stats line %v", st)
	}
	if code := e.stop(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if l := e.lines(t, "leakguard-nri stopped"); len(l) != 1 {
		t.Fatalf("want one 'stopped' line, got %v", l)
	}

	// Plugin stopped: the runtime drops it and goes on.
	resp, err := rt.Create("while-away", nil)
	if err != nil {
		t.Fatalf("a container must be created while the plugin is stopped: %v", err)
	}
	if len(resp.GetAdjust().GetHooks().GetCreateRuntime()) != 0 {
		t.Fatal("a hook without the plugin?")
	}

	// Listed as containerd lists them: c1's spec carries the hook.
	rt.SetContainers([]*api.Container{nritest.Running("c1", first.GetAdjust().GetHooks()), nritest.Running("while-away", nil)})
	e2 := startExternal(t, sock, hook)
	rt.WaitJoined(2, 10*time.Second)
	sync := waitLines(t, e2, "synchronized with the runtime", 1)
	if sync[0]["missed"] != 2.0 || sync[0]["missed_unhooked"] != 1.0 {
		t.Fatalf("a new process has seen neither container: want 2 missed, 1 unhooked; got %v", sync[0])
	}
	unprotected := e2.lines(t, "not protected by leakguard-hook")
	hooked := e2.lines(t, "its spec runs leakguard-hook")
	if len(unprotected) != 1 || unprotected[0]["container"] != "while-away" || len(hooked) != 1 || hooked[0]["container"] != "c1" {
		t.Fatalf("want while-away reported unprotected and c1 hooked; got %v and %v", unprotected, hooked)
	}
	if code := e2.stop(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// preinstalled is a plugin_path and plugin_config_path holding
// 10-leakguard-nri, and where its wrapper records the pid and exit code.
type preinstalled struct{ pluginDir, confDir, pidFile, rcFile string }

// preinstall puts a wrapper at plugins/10-leakguard-nri that runs the binary
// with no arguments, as the runtime does, and records its pid and exit code
// (the runtime kills the process it started; the wrapper's subshell outlives
// that). It writes the runtime's drop-in config for the plugin.
func preinstall(t *testing.T, dropIn string) preinstalled {
	t.Helper()
	dir := t.TempDir()
	pi := preinstalled{filepath.Join(dir, "plugins"), filepath.Join(dir, "conf.d"), filepath.Join(dir, "pid"), filepath.Join(dir, "rc")}
	for _, d := range []string{pi.pluginDir, pi.confDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	wrapper := fmt.Sprintf("#!/bin/sh\n( %q \"$@\" & echo $! > %q; wait $!; echo $? > %q ) &\nwait\n", bin, pi.pidFile, pi.rcFile)
	if err := os.WriteFile(filepath.Join(pi.pluginDir, "10-leakguard-nri"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pi.confDir, "10-leakguard-nri.conf"), []byte(dropIn), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(pi.pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return pi
}

func readInt(t *testing.T, path string, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, err := os.ReadFile(path)
		if err == nil && strings.HasSuffix(string(b), "\n") {
			n, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatalf("%s: %q", path, b)
			}
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written within %s", path, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pre-installed: the runtime starts NN-leakguard-nri with no arguments and
// a connected socket; index and name come from the runtime, settings from
// its drop-in config. The hook is injected; SIGTERM exits 0.
func TestPreinstalled(t *testing.T) {
	hook := nritest.FakeHook(t)
	logFile := filepath.Join(t.TempDir(), "nri.log")
	pi := preinstall(t, fmt.Sprintf(`{"hookPath":%q,"logFile":%q,"logLevel":"debug"}`, hook, logFile))
	rt := nritest.Start(t, filepath.Join(t.TempDir(), "nri.sock"), nil, nritest.WithPreinstalled(pi.pluginDir, pi.confDir))

	resp, err := rt.Create("c1", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantHook(t, resp, hook)
	b, _ := os.ReadFile(logFile)
	conn := nritest.Records(t, string(b), "connected to the runtime")
	if len(conn) != 1 || conn[0]["mode"] != "pre-installed" || conn[0]["id"] != "10-leakguard-nri" {
		t.Fatalf("want one pre-installed 'connected' line with the runtime's index and name, got %v\n%s", conn, b)
	}

	pid := readInt(t, pi.pidFile, 5*time.Second)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if rc := readInt(t, pi.rcFile, 10*time.Second); rc != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", rc)
	}
}

// Pre-installed with a stateFile in its drop-in: the plugin reports to
// leakguardctl serve as an external one does — connected (its own pid) once
// the runtime configured it, disconnected when it stops — so the agent
// knows when the hook is no longer added to containers.
func TestPreinstalledStateFile(t *testing.T) {
	hook := nritest.FakeHook(t)
	state := filepath.Join(t.TempDir(), "leakguard-nri", "state.json")
	pi := preinstall(t, fmt.Sprintf(`{"hookPath":%q,"stateFile":%q}`, hook, state))
	rt := nritest.Start(t, filepath.Join(t.TempDir(), "nri.sock"), nil, nritest.WithPreinstalled(pi.pluginDir, pi.confDir))
	if _, err := rt.Create("c1", nil); err != nil {
		t.Fatal(err)
	}
	pid := readInt(t, pi.pidFile, 5*time.Second)
	s, err := nristate.Read(state)
	if err != nil || !s.ConnectedAt(time.Now()) || s.PID != pid {
		t.Fatalf("state while connected: %+v, %v; want connected, pid %d", s, err, pid)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if rc := readInt(t, pi.rcFile, 10*time.Second); rc != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", rc)
	}
	if s, err := nristate.Read(state); err != nil || s.Connected || s.PID != pid {
		t.Fatalf("state after SIGTERM: %+v, %v; want not connected", s, err)
	}
}

// Pre-installed with an unusable hook: the reason goes to the runtime (its
// Configure fails, the runtime logs it and goes on without the plugin) and
// to the plugin's log, and the plugin exits 2. Containers are still created.
func TestPreinstalledBadHook(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "nri.log")
	pi := preinstall(t, fmt.Sprintf(`{"hookPath":"/nonexistent/leakguard-hook","logFile":%q}`, logFile))
	rt := nritest.Start(t, filepath.Join(t.TempDir(), "nri.sock"), nil, nritest.WithPreinstalled(pi.pluginDir, pi.confDir))

	if rc := readInt(t, pi.rcFile, 10*time.Second); rc != 2 {
		t.Fatalf("exit code %d, want 2", rc)
	}
	b, _ := os.ReadFile(logFile)
	if l := nritest.Records(t, string(b), "cannot run with this configuration"); len(l) != 1 ||
		!strings.Contains(l[0]["error"].(string), `hook "/nonexistent/leakguard-hook" does not exist`) {
		t.Fatalf("want the reason in the plugin's log, got:\n%s", b)
	}
	resp, err := rt.Create("c1", nil)
	if err != nil {
		t.Fatalf("containers must still be created: %v", err)
	}
	if len(resp.GetAdjust().GetHooks().GetCreateRuntime()) != 0 {
		t.Fatal("hook added by a plugin that did not start?")
	}
}
