package nri_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/hook/nri"
	"github.com/leakguard/leakguard/pkg/hook/nristate"
	"github.com/leakguard/leakguard/test/nritest"
)

// CheckHook accepts only what the runtime can execute as root without
// handing the node to another user.
func TestCheckHook(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask-free
			t.Fatal(err)
		}
		return p
	}
	good := file("good", 0o755)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, want string // want "" = accepted
	}{
		{good, ""},
		{link, ""},
		{file("owner-only", 0o700), ""},
		{"leakguard-hook", "not an absolute path"},
		{filepath.Join(dir, "missing"), "does not exist"},
		{dangling, "does not exist"},
		{dir, "not a regular file"},
		{fifo, "not a regular file"},
		{file("plain", 0o644), "not executable"},
		{file("group-writable", 0o775), "writable by group or others"},
		{file("world-writable", 0o757), "writable by group or others"},
	}
	for _, tt := range tests {
		err := nri.CheckHook(tt.path)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("CheckHook(%s) = %v; want %q", filepath.Base(tt.path), err, tt.want)
		}
	}
}

// Options are refused with a *ConfigError naming the bad value; a
// pre-installed plugin leaves the hook check to Configure and ignores the
// external identity, which the runtime provides.
func TestOptionsValidate(t *testing.T) {
	hook := nritest.FakeHook(t)
	ok := nri.Options{Settings: nri.Settings{HookPath: hook}, Socket: "/run/nri/nri.sock", Idx: "10", Name: "leakguard-nri", Stderr: io.Discard}
	tests := []struct {
		name string
		edit func(*nri.Options)
		want string
	}{
		{"ok", func(*nri.Options) {}, ""},
		{"idx one digit", func(o *nri.Options) { o.Idx = "1" }, `invalid plugin index "1"`},
		{"idx three digits", func(o *nri.Options) { o.Idx = "100" }, `invalid plugin index "100"`},
		{"idx not digits", func(o *nri.Options) { o.Idx = "a1" }, `invalid plugin index "a1"`},
		{"name empty", func(o *nri.Options) { o.Name = "" }, "name is empty"},
		{"name slash", func(o *nri.Options) { o.Name = "a/b" }, "invalid character '/'"},
		{"name space", func(o *nri.Options) { o.Name = "a b" }, "invalid character ' '"},
		{"name all allowed", func(o *nri.Options) { o.Name = "aZ09_.+-" }, ""},
		{"relative socket", func(o *nri.Options) { o.Socket = "nri.sock" }, "not an absolute path"},
		{"missing hook", func(o *nri.Options) { o.HookPath = "/nonexistent/leakguard-hook" }, "does not exist"},
		{"log level", func(o *nri.Options) { o.LogLevel = "loud" }, `log level "loud"`},
		{"relative log file", func(o *nri.Options) { o.LogFile = "x.log" }, "not an absolute path"},
		{"relative hook config", func(o *nri.Options) { o.HookConfig = "hook.json" }, "not an absolute path"},
		{"relative state file", func(o *nri.Options) { o.StateFile = "state.json" }, `state file "state.json" is not an absolute path`},
		{"pre-installed, hook checked later", func(o *nri.Options) {
			o.Preinstalled, o.HookPath, o.Idx, o.Name, o.Socket = true, "/nonexistent", "", "", ""
		}, ""},
	}
	for _, tt := range tests {
		o := ok
		tt.edit(&o)
		err := o.Validate()
		var ce *nri.ConfigError
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		case err != nil && !errors.As(err, &ce):
			t.Errorf("%s: %T is not a *ConfigError", tt.name, err)
		}
	}
}

func TestParseLevel(t *testing.T) {
	for _, s := range []string{"", "debug", "info", "warn", "error", "DEBUG"} {
		if _, err := nri.ParseLevel(s); err != nil {
			t.Errorf("ParseLevel(%q): %v", s, err)
		}
	}
	for _, s := range []string{"trace", "info+2", "warning", "1"} {
		if _, err := nri.ParseLevel(s); err == nil {
			t.Errorf("ParseLevel(%q) accepted", s)
		}
	}
}

// The runtime's drop-in config of a pre-installed plugin overrides the
// command line; anything wrong in it (or a hook that is unusable) fails
// Configure with a *ConfigError, which the runtime logs.
func TestConfigureDropIn(t *testing.T) {
	hook := nritest.FakeHook(t)
	logFile := filepath.Join(t.TempDir(), "nri.log")
	tests := []struct {
		name, dropIn, want string
	}{
		{"none, default hook ok", "", ""},
		{"hook and log", `{"hookPath":"` + hook + `","logFile":"` + logFile + `","logLevel":"debug"}`, ""},
		{"missing hook", `{"hookPath":"/nonexistent/leakguard-hook"}`, "does not exist"},
		{"unknown key", `{"hookpath2":"x"}`, "unknown field"},
		{"trailing data", `{} {}`, "trailing data"},
		{"not JSON", `hookPath: x`, "invalid plugin config"},
		{"bad level", `{"logLevel":"loud"}`, `log level "loud"`},
		{"relative log", `{"logFile":"nri.log"}`, "not an absolute path"},
		{"relative state file", `{"stateFile":"state.json"}`, `state file "state.json" is not an absolute path`},
	}
	t.Chdir(t.TempDir()) // a relative log or state file, if it were ever written, would land here
	for _, tt := range tests {
		p, err := nri.New(nri.Options{Settings: nri.Settings{HookPath: hook}, Preinstalled: true, Stderr: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Configure(t.Context(), tt.dropIn, "containerd", "v2.4.2")
		var ce *nri.ConfigError
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.As(err, &ce)):
			t.Errorf("%s: got %v, want a *ConfigError with %q", tt.name, err, tt.want)
		}
		if got := p.Stats().Connected; got != (tt.want == "") {
			t.Errorf("%s: connected = %v", tt.name, got)
		}
	}
	if ents, _ := os.ReadDir("."); len(ents) != 0 {
		t.Fatalf("a refused drop-in must not open its log file or write its state file: found %v", ents)
	}
	if b, err := os.ReadFile(logFile); err != nil || !strings.Contains(string(b), `"msg":"configured by the runtime"`) {
		t.Fatalf("the drop-in's log file should receive the log: %q, %v", b, err)
	}
}

// The runtime execs the hook as root by name, after the check: a hook that
// another user can replace through a directory (the path as given, or a
// symlink's target) is refused, whatever the file itself looks like.
func TestCheckHookDirs(t *testing.T) {
	root := t.TempDir()
	mkdir := func(name string, mode os.FileMode, uid int) string {
		d := filepath.Join(root, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(d, uid, uid); err != nil {
			t.Fatal(err)
		}
		return d
	}
	hook := func(dir string) string {
		p := filepath.Join(dir, "leakguard-hook")
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	link := func(dir, name, target string, uid int) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	safe := mkdir("safe", 0o755, 0)
	good := hook(safe)
	open := mkdir("open", 0o777, 0)
	groupW := mkdir("group", 0o775, 0)
	users := mkdir("users", 0o755, 1000)
	sticky := mkdir("sticky", os.ModeSticky|0o777, 0)
	stickyHook := hook(sticky)

	tests := []struct {
		name, path, want string // want "" = accepted
	}{
		{"hook in a safe dir", good, ""},
		{"root's hook in a sticky dir", stickyHook, ""},
		{"root's symlink in a sticky dir", link(sticky, "root-link", good, 0), ""},
		{"relative symlink through ..", link(safe, "rel", "../safe/leakguard-hook", 0), ""},
		{"hook in a world-writable dir", hook(open), "writable by group or others"},
		{"hook in a group-writable dir", hook(groupW), "writable by group or others"},
		{"hook in another user's dir", hook(users), "owned by uid 1000"},
		{"another user's symlink in a sticky dir", link(sticky, "user-link", good, 1000), "writable by group or others"},
		{"symlink in a world-writable dir", link(open, "link", good, 0), "writable by group or others"},
		{"symlink to a hook in a world-writable dir", link(safe, "to-open", filepath.Join(open, "leakguard-hook"), 0), "writable by group or others"},
		{"symlink through another user's dir", link(safe, "to-users", "../users/leakguard-hook", 0), "owned by uid 1000"},
	}
	for _, tt := range tests {
		err := nri.CheckHook(tt.path)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: CheckHook(%s) = %v; want %q", tt.name, tt.path, err, tt.want)
		}
	}
}

// A pre-installed plugin learns its state file from the drop-in: once the
// runtime configured it, the file says connected, for leakguardctl serve.
func TestConfigureDropInStateFile(t *testing.T) {
	hook := nritest.FakeHook(t)
	state := filepath.Join(t.TempDir(), "run", "state.json")
	p, err := nri.New(nri.Options{Settings: nri.Settings{HookPath: hook}, Preinstalled: true, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nristate.Read(state); !errors.Is(err, nristate.ErrNoState) {
		t.Fatalf("state before Configure: %v", err)
	}
	if _, err := p.Configure(t.Context(), `{"stateFile":"`+state+`"}`, "containerd", "v2.4.2"); err != nil {
		t.Fatal(err)
	}
	s, err := nristate.Read(state)
	if err != nil || !s.ConnectedAt(time.Now()) || s.PID != os.Getpid() {
		t.Fatalf("state after Configure: %+v, %v; want connected, our pid", s, err)
	}
}
