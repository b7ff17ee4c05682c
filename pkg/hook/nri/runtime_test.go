package nri_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"

	"github.com/leakguard/leakguard/pkg/hook/nri"
)

// runtime is the runtime side of NRI, played by containerd/nri's own
// adaptation package (what containerd and CRI-O embed), listening on a
// private socket. Its state (what Synchronize lists) is set by the test.
// Plugins reach it through a proxy on sock: Adaptation.Stop leaves external
// plugins' connections open (containerd's exit is what closes them), so stop
// cuts the proxy's connections to play a runtime that went away.
type runtime struct {
	t     *testing.T
	r     *adaptation.Adaptation
	sock  string
	proxy *proxy

	mu   sync.Mutex
	pods []*api.PodSandbox
	ctrs []*api.Container

	plugins chan int // UpdatePluginCount calls: a plugin joined or left
}

func init() {
	nrilog.Set(quietLog{}) // the adaptation's own chatter stays out of test output
}

type runtimeOption func(*runtime, *[]adaptation.Option)

// withPreinstalled points the runtime's plugin_path and plugin_config_path
// at dirs of the test.
func withPreinstalled(pluginDir, confDir string) runtimeOption {
	return func(_ *runtime, o *[]adaptation.Option) {
		*o = append(*o, adaptation.WithPluginPath(pluginDir), adaptation.WithPluginConfigPath(confDir))
	}
}

func startRuntime(t *testing.T, sock string, ctrs []*api.Container, opts ...runtimeOption) *runtime {
	t.Helper()
	rt := &runtime{t: t, sock: sock, ctrs: ctrs, plugins: make(chan int, 64)}
	empty := t.TempDir()
	upstream := filepath.Join(empty, "runtime.sock")
	aopts := []adaptation.Option{
		adaptation.WithSocketPath(upstream),
		adaptation.WithPluginPath(empty),
		adaptation.WithPluginConfigPath(empty),
		adaptation.WithMetrics(metrics{rt}),
	}
	for _, o := range opts {
		o(rt, &aopts)
	}
	r, err := adaptation.New("test-runtime", "v0.0.1", rt.sync, rt.update, aopts...)
	if err != nil {
		t.Fatalf("adaptation.New: %v", err)
	}
	if err := r.Start(); err != nil {
		t.Fatalf("starting the NRI runtime side: %v", err)
	}
	rt.r = r
	t.Cleanup(rt.stop)
	if rt.proxy, err = startProxy(sock, upstream); err != nil {
		t.Fatal(err)
	}
	return rt
}

func (rt *runtime) stop() {
	if rt.proxy != nil {
		rt.proxy.cut()
		rt.proxy = nil
	}
	if rt.r != nil {
		rt.r.Stop()
		rt.r = nil
	}
}

func (rt *runtime) sync(ctx context.Context, cb adaptation.SyncCB) error {
	rt.mu.Lock()
	pods, ctrs := rt.pods, rt.ctrs
	rt.mu.Unlock()
	_, err := cb(ctx, pods, ctrs)
	return err
}

func (rt *runtime) update(context.Context, []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	return nil, nil
}

// waitPlugins waits until the runtime counts n registered plugins.
func (rt *runtime) waitPlugins(n int, within time.Duration) {
	rt.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case got := <-rt.plugins:
			if got == n {
				return
			}
		case <-deadline:
			rt.t.Fatalf("the runtime did not see %d plugin(s) within %s", n, within)
		}
	}
}

// create asks the plugins about a new container, as CRI CreateContainer does.
func (rt *runtime) create(id string, hooks *api.Hooks) (*api.CreateContainerResponse, error) {
	pod := &api.PodSandbox{Id: "pod-" + id, Name: "pod-" + id, Namespace: "default", Uid: "uid-" + id}
	ctr := &api.Container{Id: id, PodSandboxId: pod.Id, Name: "ctr-" + id, State: api.ContainerState_CONTAINER_CREATED, Hooks: hooks}
	return rt.r.CreateContainer(context.Background(), &api.CreateContainerRequest{Pod: pod, Container: ctr})
}

func (rt *runtime) remove(id string) {
	rt.t.Helper()
	pod := &api.PodSandbox{Id: "pod-" + id, Name: "pod-" + id, Namespace: "default"}
	ctr := &api.Container{Id: id, PodSandboxId: pod.Id, Name: "ctr-" + id, State: api.ContainerState_CONTAINER_STOPPED}
	if err := rt.r.RemoveContainer(context.Background(), &api.RemoveContainerRequest{Pod: pod, Container: ctr}); err != nil {
		rt.t.Fatalf("RemoveContainer %s: %v", id, err)
	}
}

// proxy relays connections from path to upstream until cut.
type proxy struct {
	l      net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

func startProxy(path, upstream string) (*proxy, error) {
	os.Remove(path) // a socket left by an earlier runtime, as the adaptation does
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	p := &proxy{l: l}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			down, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", upstream)
			if err != nil {
				down.Close()
				continue
			}
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				up.Close()
				down.Close()
				continue
			}
			p.conns = append(p.conns, down, up)
			p.wg.Add(2)
			p.mu.Unlock()
			go func() { defer p.wg.Done(); io.Copy(up, down); up.Close(); down.Close() }()
			go func() { defer p.wg.Done(); io.Copy(down, up); up.Close(); down.Close() }()
		}
	}()
	return p, nil
}

func (p *proxy) cut() {
	p.l.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

type metrics struct{ rt *runtime }

func (metrics) RecordPluginInvocation(string, string, error)                                      {}
func (metrics) RecordPluginLatency(string, string, time.Duration)                                 {}
func (metrics) RecordPluginAdjustments(string, string, *adaptation.ContainerAdjustment, int, int) {}
func (m metrics) UpdatePluginCount(n int) {
	select {
	case m.rt.plugins <- n:
	default:
	}
}

type quietLog struct{}

func (quietLog) Debugf(context.Context, string, ...any) {}
func (quietLog) Infof(context.Context, string, ...any)  {}
func (quietLog) Warnf(context.Context, string, ...any)  {}
func (quietLog) Errorf(context.Context, string, ...any) {}

// running is a container the runtime lists at Synchronize.
func running(id string, hooks *api.Hooks) *api.Container {
	return &api.Container{Id: id, PodSandboxId: "pod-" + id, Name: "ctr-" + id,
		State: api.ContainerState_CONTAINER_RUNNING, Hooks: hooks}
}

// logBuf collects the plugin's JSON log lines.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the records whose msg contains substr.
func (b *logBuf) lines(t *testing.T, substr string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	data := b.buf.String()
	b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(data), "\n") {
		if l == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if msg, _ := rec["msg"].(string); strings.Contains(msg, substr) {
			out = append(out, rec)
		}
	}
	return out
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fakeHook writes an executable file for the plugin to hand to the runtime
// (the runtime side here never runs it).
func fakeHook(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "leakguard-hook")
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// plugin runs an external leakguard-nri in-process against sock.
type plugin struct {
	p    *nri.Plugin
	log  *logBuf
	done chan error
	stop context.CancelFunc
}

func startPlugin(t *testing.T, sock string, s nri.Settings) *plugin {
	t.Helper()
	lb := &logBuf{}
	if s.LogLevel == "" {
		s.LogLevel = "debug"
	}
	p, err := nri.New(nri.Options{
		Settings: s, Socket: sock, Idx: "10", Name: "leakguard-nri", Stderr: lb,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("nri.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pl := &plugin{p: p, log: lb, done: make(chan error, 1), stop: cancel}
	go func() { pl.done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-pl.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
		if t.Failed() {
			t.Logf("plugin log:\n%s", lb.String())
		}
	})
	return pl
}

// waitFor polls cond every 10ms.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
