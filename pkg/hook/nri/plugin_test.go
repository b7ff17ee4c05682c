package nri_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"

	"github.com/leakguard/leakguard/pkg/hook/nri"
	"github.com/leakguard/leakguard/pkg/hook/nristate"
	"github.com/leakguard/leakguard/test/nritest"
)

// wantHook fails unless resp adds exactly the leakguard hook, at createRuntime
// only, with args.
func wantHook(t *testing.T, resp *api.CreateContainerResponse, path string, args ...string) {
	t.Helper()
	h := resp.GetAdjust().GetHooks()
	if n := len(h.GetPrestart()) + len(h.GetCreateContainer()) + len(h.GetStartContainer()) +
		len(h.GetPoststart()) + len(h.GetPoststop()); n != 0 {
		t.Fatalf("hooks at stages other than createRuntime: %v", h)
	}
	cr := h.GetCreateRuntime()
	if len(cr) != 1 {
		t.Fatalf("want 1 createRuntime hook, got %v", cr)
	}
	got := cr[0]
	if got.Path != path || strings.Join(got.Args, " ") != strings.Join(args, " ") || got.GetTimeout().GetValue() != nri.HookTimeout || len(got.Env) != 0 {
		t.Fatalf("hook = %v; want path %s args %q timeout %d", got, path, args, nri.HookTimeout)
	}
}

func wantNoHook(t *testing.T, resp *api.CreateContainerResponse) {
	t.Helper()
	h := resp.GetAdjust().GetHooks()
	if len(h.GetCreateRuntime())+len(h.GetPrestart()) != 0 {
		t.Fatalf("want no hook added, got %v", h)
	}
}

// The plugin registers with the runtime, counts the containers already
// running at its first Synchronize, and adds the hook to each new container
// (with the policy file when one is configured), but not to one whose spec
// already runs leakguard-hook.
func TestRegisterSyncInject(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "nri.sock")
	hook := nritest.FakeHook(t)
	already := &api.Hooks{CreateRuntime: []*api.Hook{{Path: "/opt/other/leakguard-hook", Args: []string{"leakguard-hook"}}}}
	rt := nritest.Start(t, sock, []*api.Container{nritest.Running("old-1", nil), nritest.Running("old-2", already)})
	pl := startPlugin(t, sock, nri.Settings{HookPath: hook, HookConfig: "/etc/leakguard/custom.json"})
	rt.WaitJoined(1, 5*time.Second)

	st := pl.p.Stats()
	if !st.Connected || st.Connects != 1 || st.Missed != 2 || st.MissedUnhooked != 1 {
		t.Fatalf("after the first sync: %+v; want connected, 1 connect, 2 missed, 1 unhooked", st)
	}
	if warn := pl.log.Lines(t, "not protected by leakguard-hook"); len(warn) != 1 || warn[0]["container"] != "old-1" || warn[0]["level"] != "WARN" {
		t.Fatalf("want one WARN line for old-1, got %v", warn)
	}
	if info := pl.log.Lines(t, "its spec runs leakguard-hook"); len(info) != 1 || info[0]["container"] != "old-2" {
		t.Fatalf("want one line for old-2 (hooked), got %v", info)
	}

	resp, err := rt.Create("new-1", nil)
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	wantHook(t, resp, hook, "leakguard-hook", "--config", "/etc/leakguard/custom.json")

	resp, err = rt.Create("new-2", already)
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	wantNoHook(t, resp)

	// Another program's hook is no reason to leave ours out.
	other := &api.Hooks{CreateRuntime: []*api.Hook{{Path: "/usr/bin/other-hook"}}, Prestart: []*api.Hook{{Path: "/usr/bin/nvidia-container-runtime-hook"}}}
	resp, err = rt.Create("new-3", other)
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	wantHook(t, resp, hook, "leakguard-hook", "--config", "/etc/leakguard/custom.json")

	st = pl.p.Stats()
	if st.Injected != 2 || st.AlreadyHooked != 1 || st.Skipped != 0 || st.Create.Count != 3 {
		t.Fatalf("stats %+v; want 2 injected, 1 already hooked, 0 skipped, 3 timed", st)
	}
}

// The runtime side goes away (containerd restarting) and comes back: the
// plugin notices, reconnects, counts only the container that started while it
// was away (not the one it was asked about, nor the one removed since), and
// protects the next container.
func TestReconnect(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "nri.sock")
	hook := nritest.FakeHook(t)
	rt := nritest.Start(t, sock, nil)
	pl := startPlugin(t, sock, nri.Settings{HookPath: hook})
	rt.WaitJoined(1, 5*time.Second)
	for _, id := range []string{"before", "removed"} {
		if _, err := rt.Create(id, nil); err != nil {
			t.Fatal(err)
		}
	}
	rt.Remove("removed")

	rt.Stop()
	waitFor(t, "the plugin to notice the runtime is gone", 5*time.Second, func() bool { return !pl.p.Stats().Connected })
	if st := pl.p.Stats(); st.Disconnects != 1 || st.Missed != 0 {
		t.Fatalf("after the runtime stopped: %+v", st)
	}
	time.Sleep(300 * time.Millisecond) // a few failed attempts

	// The new instance lists what runs now: "before" (seen), "removed"
	// (listed again to prove it was forgotten) and "away" (new to the plugin).
	rt2 := nritest.Start(t, sock, []*api.Container{nritest.Running("before", nil), nritest.Running("away", nil), nritest.Running("removed", nil)})
	rt2.WaitJoined(1, 5*time.Second)
	st := pl.p.Stats()
	if !st.Connected || st.Connects != 2 || st.Missed != 2 || st.MissedUnhooked != 2 {
		t.Fatalf("after reconnecting: %+v; want connected, 2 connects, 2 missed", st)
	}
	var missed []string
	for _, l := range pl.log.Lines(t, "started while leakguard-nri was away") {
		missed = append(missed, l["container"].(string))
	}
	if strings.Join(missed, ",") != "away,removed" {
		t.Fatalf("containers reported as started while away: %v; want away,removed", missed)
	}
	if n := len(pl.log.Lines(t, "lost the connection")); n != 1 {
		t.Fatalf("want 1 'lost the connection' line, got %d", n)
	}
	if n := len(pl.log.Lines(t, "cannot connect")); n != 0 {
		t.Fatalf("failed reconnects after a reported loss must stay at debug, got %d warnings", n)
	}

	resp, err := rt2.Create("after", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantHook(t, resp, hook, "leakguard-hook")
}

// A socket that is not there yet: the plugin retries with capped back-off,
// warns once (not per retry), and connects when the runtime appears.
func TestSocketMissing(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "nri.sock")
	pl := startPlugin(t, sock, nri.Settings{HookPath: nritest.FakeHook(t)})
	time.Sleep(1500 * time.Millisecond)

	warns := pl.log.Lines(t, "cannot connect to the runtime")
	retries := pl.log.Lines(t, "retrying the connection")
	if len(warns) != 1 || warns[0]["level"] != "WARN" {
		t.Fatalf("want exactly one warning, got %v", warns)
	}
	// 20ms doubling to a 200ms cap over 1.5s: 20+40+80+160 then every
	// 200ms, about 10 attempts. A busy loop would make thousands.
	if len(retries) < 4 || len(retries) > 14 {
		t.Fatalf("%d retries in 1.5s; want capped exponential back-off (about 10)", len(retries))
	}
	for _, r := range retries {
		if r["level"] != "DEBUG" {
			t.Fatalf("retry logged at %v", r["level"])
		}
	}
	if pl.p.Stats().Connected {
		t.Fatal("connected without a runtime")
	}

	rt := nritest.Start(t, sock, nil)
	rt.WaitJoined(1, 5*time.Second)
	if n := len(pl.log.Lines(t, "connected to the runtime")); n != 1 {
		t.Fatalf("want one 'connected' line, got %d", n)
	}
}

// The hook binary disappears (or loses its x bit) after start: containers are
// still created, without the hook, and each is logged; when it is back it is
// injected again. Under a hook policy with failClosed the container is
// refused instead; a policy file that cannot be used fails open.
func TestHookUnusableLater(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "nri.sock")
	hook := nritest.FakeHook(t)
	policy := filepath.Join(dir, "hook.json")
	if err := os.WriteFile(policy, []byte(`{"mode":"privileged"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	rt := nritest.Start(t, sock, nil)
	pl := startPlugin(t, sock, nri.Settings{HookPath: hook, HookConfig: policy})
	rt.WaitJoined(1, 5*time.Second)

	resp, err := rt.Create("c1", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantHook(t, resp, hook, "leakguard-hook", "--config", policy)

	if err := os.Remove(hook); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c2", "c3"} {
		resp, err := rt.Create(id, nil)
		if err != nil {
			t.Fatalf("container %s failed while the hook is missing (fail-open): %v", id, err)
		}
		wantNoHook(t, resp)
	}
	skips := pl.log.Lines(t, "created without leakguard-hook")
	if len(skips) != 2 || skips[0]["container"] != "c2" || skips[1]["container"] != "c3" ||
		!strings.Contains(skips[0]["error"].(string), "does not exist") {
		t.Fatalf("want one skip line per container naming the reason, got %v", skips)
	}

	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err = rt.Create("c4", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantNoHook(t, resp)

	if err := os.Chmod(hook, 0o755); err != nil {
		t.Fatal(err)
	}
	resp, err = rt.Create("c5", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantHook(t, resp, hook, "leakguard-hook", "--config", policy)

	// failClosed, read successfully: the container is refused, with a reason.
	os.Remove(hook)
	if err := os.WriteFile(policy, []byte(`{"failClosed":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Create("c6", nil); err == nil || !strings.Contains(err.Error(), "failClosed") {
		t.Fatalf("want the container refused under failClosed, got %v", err)
	}
	// A broken policy file never fails closed.
	if err := os.WriteFile(policy, []byte(`{"failClosed":true,"mode":"nope"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err = rt.Create("c7", nil)
	if err != nil {
		t.Fatalf("an invalid policy must fail open: %v", err)
	}
	wantNoHook(t, resp)

	st := pl.p.Stats()
	if st.Injected != 2 || st.Skipped != 4 || st.Refused != 1 || !st.Connected {
		t.Fatalf("stats %+v; want 2 injected, 4 skipped, 1 refused, still connected", st)
	}
	if l := pl.log.Lines(t, "created without leakguard-hook"); l[len(l)-1]["policy_error"] == nil {
		t.Fatalf("the skip under a broken policy should carry policy_error: %v", l[len(l)-1])
	}
}

// The time spent inside CreateContainer is recorded for every call.
func TestCreateLatency(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "nri.sock")
	rt := nritest.Start(t, sock, nil)
	pl := startPlugin(t, sock, nri.Settings{HookPath: nritest.FakeHook(t), LogLevel: "info"})
	rt.WaitJoined(1, 5*time.Second)
	const n = 300
	start := time.Now()
	for i := range n {
		if _, err := rt.Create(fmt.Sprintf("c%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip := time.Since(start) / n
	c := pl.p.Stats().Create
	if c.Count != n || c.P50 <= 0 || c.P50 > c.P99 || c.P99 > c.Max {
		t.Fatalf("latency stats %+v after %d calls", c, n)
	}
	t.Logf("inside CreateContainer: p50 %v p99 %v max %v; runtime round trip mean %v", c.P50, c.P99, c.Max, roundTrip)
}

// The plugin reports its connection to the state file the node agent reads:
// connected once joined, not connected when the runtime goes away and when
// the plugin stops.
func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "nri.sock")
	state := filepath.Join(dir, "state", "state.json")
	rt := nritest.Start(t, sock, nil)
	lb := &nritest.Log{}
	p, err := nri.New(nri.Options{
		Settings: nri.Settings{HookPath: nritest.FakeHook(t), LogLevel: "debug", StateFile: state}, Socket: sock, Idx: "10", Name: "leakguard-nri",
		Stderr: lb, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer cancel()
	rt.WaitJoined(1, 5*time.Second)
	connected := func() bool {
		s, err := nristate.Read(state)
		return err == nil && s.ConnectedAt(time.Now())
	}
	waitFor(t, "the state file to say connected", 5*time.Second, connected)
	rt.Stop()
	waitFor(t, "the state file to say disconnected", 5*time.Second, func() bool { return !connected() })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s, err := nristate.Read(state); err != nil || s.Connected || s.PID != os.Getpid() {
		t.Fatalf("after stop: %+v, %v; want our pid, not connected", s, err)
	}
}

// --wait-for-hook: a hook not installed yet is waited for (one warning),
// without connecting; once it is there the plugin connects and injects it.
// Without the option a missing hook still fails New.
func TestWaitForHook(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "nri.sock")
	hook := filepath.Join(dir, "libexec", "leakguard-hook")
	base := nri.Options{Settings: nri.Settings{HookPath: hook}, Socket: sock, Idx: "10", Name: "leakguard-nri", Stderr: &nritest.Log{}}
	if _, err := nri.New(base); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing hook without --wait-for-hook: %v", err)
	}

	rt := nritest.Start(t, sock, nil)
	lb := &nritest.Log{}
	opts := base
	opts.Stderr, opts.LogLevel, opts.WaitForHook, opts.HookPoll = lb, "debug", true, 20*time.Millisecond
	p, err := nri.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("plugin log:\n%s", lb.String())
		}
	}()
	time.Sleep(300 * time.Millisecond)
	if w := lb.Lines(t, "waiting for the hook"); len(w) != 1 || w[0]["level"] != "WARN" {
		t.Fatalf("want one warning while waiting, got %v", w)
	}
	if p.Stats().Connected {
		t.Fatal("connected before the hook exists")
	}
	if err := os.MkdirAll(filepath.Dir(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hook, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rt.WaitJoined(1, 5*time.Second)
	resp, err := rt.Create("c1", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantHook(t, resp, hook, "leakguard-hook")
}

// --wait-for-hook does not wait out a hook that exists but is unusable.
func TestWaitForHookUnusable(t *testing.T) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "leakguard-hook")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := nri.New(nri.Options{Settings: nri.Settings{HookPath: hook}, Socket: filepath.Join(dir, "nri.sock"),
		Idx: "10", Name: "leakguard-nri", Stderr: &nritest.Log{}, WaitForHook: true})
	if err == nil || !strings.Contains(err.Error(), "not executable") {
		t.Fatalf("unusable hook with --wait-for-hook: %v", err)
	}
}
