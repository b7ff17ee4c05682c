package nri_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"

	"github.com/leakguard/leakguard/pkg/hook/nri"
	"github.com/leakguard/leakguard/test/nritest"
)

// nriTimeout is the runtime's default request timeout: a request the plugin
// answers later fails the container (or the plugin is dropped).
const nriTimeout = 2 * time.Second

// configure sends what a runtime sends first on a connection.
func configure(t *testing.T, c *nritest.RawConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nriTimeout)
	defer cancel()
	if _, err := c.Plugin.Configure(ctx, &api.ConfigureRequest{RuntimeName: "hostile", RuntimeVersion: "v1",
		RegistrationTimeout: 5000, RequestTimeout: 2000}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
}

func nextConn(t *testing.T, r *nritest.Raw) *nritest.RawConn {
	const within = 5 * time.Second
	t.Helper()
	select {
	case c := <-r.Conns:
		return c
	case <-time.After(within):
		t.Fatalf("no plugin connection registered within %s", within)
		return nil
	}
}

// A runtime that goes away between answering RegisterPlugin and sending
// Configure (containerd killed at that moment) must not hold the plugin
// away for long: the next runtime on the socket gets it within the back-off.
func TestRuntimeGoneBeforeConfigure(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nri.sock")
	hook := nritest.FakeHook(t)
	raw := nritest.ListenRaw(t, sock, true)
	pl := startPlugin(t, sock, nri.Settings{HookPath: hook})
	c := nextConn(t, raw)
	time.Sleep(50 * time.Millisecond) // the registration's answer is on its way
	c.Close()

	begin := time.Now()
	rt := nritest.Start(t, sock, nil)
	rt.WaitJoined(1, 8*time.Second)
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("the plugin joined the next runtime after %s; want within the back-off (max 200ms here)", d.Round(time.Millisecond))
	}
	resp, err := rt.Create("after", nil)
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	wantHook(t, resp, hook, "leakguard-hook")
	_ = pl
}

// A runtime that accepts the connection and then drops it, again and
// again (a crash loop), is retried with back-off: never a busy loop.
func TestReconnectStormBackoff(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nri.sock")
	raw := nritest.ListenRaw(t, sock, true)
	startPlugin(t, sock, nri.Settings{HookPath: nritest.FakeHook(t)})
	stop := time.After(3 * time.Second)
	for done := false; !done; {
		select {
		case c := <-raw.Conns:
			configure(t, c) // registered and configured: a session that lasted no time
			c.Close()
		case <-stop:
			done = true
		}
	}
	// Back-off 20ms doubling to 200ms: about 15 attempts in 3s; a loop
	// would make thousands.
	if n := raw.Accepted(); n > 30 || n < 3 {
		t.Fatalf("%d connections in 3s; want the back-off's pace (about 15)", n)
	}
}

// A runtime with thousands of containers, sending them all at once and
// then a storm of concurrent CreateContainer, gets every answer within the
// NRI timeout, with the hook.
func TestBigSyncAndConcurrentCreates(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nri.sock")
	hook := nritest.FakeHook(t)
	raw := nritest.ListenRaw(t, sock, true)
	pl := startPlugin(t, sock, nri.Settings{HookPath: hook, LogLevel: "info"})
	c := nextConn(t, raw)
	configure(t, c)

	const running = 5000
	ctrs := make([]*api.Container, running)
	pods := make([]*api.PodSandbox, running)
	for i := range ctrs {
		ctrs[i] = nritest.Running(fmt.Sprintf("old-%d", i), nil)
		pods[i] = &api.PodSandbox{Id: ctrs[i].PodSandboxId, Name: "p", Namespace: "default"}
	}
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), nriTimeout)
	// In chunks, as the adaptation sends a sync too big for one message.
	for i := 0; i < running; i += 1000 {
		if _, err := c.Plugin.Synchronize(ctx, &api.SynchronizeRequest{Pods: pods[i : i+1000], Containers: ctrs[i : i+1000], More: i+1000 < running}); err != nil {
			t.Fatalf("Synchronize: %v", err)
		}
	}
	cancel()
	if d := time.Since(begin); d > nriTimeout {
		t.Fatalf("Synchronize of %d containers took %s", running, d)
	}
	if st := pl.p.Stats(); st.Missed != running || st.MissedUnhooked != running {
		t.Fatalf("stats %+v; want %d missed, all unhooked", st, running)
	}

	const creates = 200
	var wg sync.WaitGroup
	errs := make(chan error, creates)
	for i := 0; i < creates; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), nriTimeout)
			defer cancel()
			id := fmt.Sprintf("new-%d", i)
			resp, err := c.Plugin.CreateContainer(ctx, &api.CreateContainerRequest{
				Pod:       &api.PodSandbox{Id: "pod-" + id},
				Container: &api.Container{Id: id, PodSandboxId: "pod-" + id},
			})
			switch {
			case err != nil:
				errs <- fmt.Errorf("%s: %w", id, err)
			case len(resp.GetAdjust().GetHooks().GetCreateRuntime()) != 1:
				errs <- fmt.Errorf("%s: no hook in %v", id, resp)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := pl.p.Stats(); st.Injected != creates {
		t.Fatalf("injected %d, want %d", st.Injected, creates)
	}
}

// Requests with parts missing (a runtime's bug, or a newer runtime) are
// answered, never a crash: the plugin goes on serving.
func TestMalformedRequests(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nri.sock")
	hook := nritest.FakeHook(t)
	raw := nritest.ListenRaw(t, sock, true)
	pl := startPlugin(t, sock, nri.Settings{HookPath: hook})
	c := nextConn(t, raw)
	configure(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), nriTimeout)
	defer cancel()
	if _, err := c.Plugin.Synchronize(ctx, &api.SynchronizeRequest{Containers: []*api.Container{{}}}); err != nil {
		t.Fatalf("Synchronize: %v", err)
	}
	if _, err := c.Plugin.CreateContainer(ctx, &api.CreateContainerRequest{}); err != nil {
		t.Fatalf("empty CreateContainer: %v", err)
	}
	if _, err := c.Plugin.StateChange(ctx, &api.StateChangeEvent{Event: api.Event_REMOVE_CONTAINER}); err != nil {
		t.Fatalf("empty RemoveContainer: %v", err)
	}
	// A second Configure on a live connection (a confused runtime).
	configure(t, c)
	resp, err := c.Plugin.CreateContainer(ctx, &api.CreateContainerRequest{Pod: &api.PodSandbox{Id: "p"}, Container: &api.Container{Id: "c"}})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	wantHook(t, resp, hook, "leakguard-hook")
	_ = pl
}

// Each registration the runtime abandons (closing the connection before
// Configure) must leave nothing behind: the NRI stub would otherwise keep
// its goroutines stuck for ever, one set per attempt, in a crash-looping
// runtime's every restart.
func TestAbandonedRegistrationsLeaveNothing(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nri.sock")
	raw := nritest.ListenRaw(t, sock, true)
	startPlugin(t, sock, nri.Settings{HookPath: nritest.FakeHook(t)})
	for i := 0; i < 10; i++ {
		c := nextConn(t, raw)
		time.Sleep(30 * time.Millisecond) // the registration's answer is on its way
		c.Close()
	}
	c := nextConn(t, raw) // the 11th, still registering, is live
	defer c.Close()
	time.Sleep(300 * time.Millisecond)
	buf := make([]byte, 1<<22)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if n := strings.Count(stacks, "stub.(*stub).Start("); n > 1 {
		t.Fatalf("%d goroutines stuck in the NRI stub's Start after 10 abandoned registrations; want at most the live one", n)
	}
	if n := strings.Count(stacks, "stub.(*stub).connClosed("); n > 0 {
		t.Fatalf("%d goroutines stuck in the NRI stub's connClosed", n)
	}
}
