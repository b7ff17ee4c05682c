// Package nritest plays the runtime side of NRI for leakguard-nri's tests:
// containerd/nri's own adaptation package (what containerd and CRI-O embed)
// on a private socket, with the containers Synchronize lists set by the test.
package nritest

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
)

func init() {
	nrilog.Set(quietLog{}) // the adaptation's chatter stays out of test output
}

// Runtime is one instance of the runtime side. External plugins reach it
// through a proxy on the socket path: Adaptation.Stop leaves external
// plugins' connections open (in containerd, the process exit closes them),
// so Stop cuts the proxy's connections to play a runtime that went away.
type Runtime struct {
	t     *testing.T
	r     *adaptation.Adaptation
	proxy *proxy

	mu   sync.Mutex
	ctrs []*api.Container

	// syncs counts Synchronize rounds; joined counts those followed by the
	// adaptation's plugin count update, which comes once the plugin is in
	// its list (requests also update the count: see WaitJoined).
	syncs, joined int
	started       bool          // syncs before Start returns are the pre-installed plugins'
	changed       chan struct{} // closed and replaced on each change
}

// Option configures a Runtime.
type Option func(*[]adaptation.Option)

// WithPreinstalled points plugin_path and plugin_config_path at dirs: the
// runtime starts the plugins found there (NN-name) when it starts.
func WithPreinstalled(pluginDir, confDir string) Option {
	return func(o *[]adaptation.Option) {
		*o = append(*o, adaptation.WithPluginPath(pluginDir), adaptation.WithPluginConfigPath(confDir))
	}
}

// Start starts a runtime whose external plugins connect at sock and whose
// Synchronize lists ctrs. It is stopped when the test ends.
func Start(t *testing.T, sock string, ctrs []*api.Container, opts ...Option) *Runtime {
	t.Helper()
	rt := &Runtime{t: t, ctrs: ctrs, changed: make(chan struct{})}
	private := t.TempDir()
	upstream := filepath.Join(private, "runtime.sock")
	aopts := []adaptation.Option{
		adaptation.WithSocketPath(upstream),
		adaptation.WithPluginPath(private),
		adaptation.WithPluginConfigPath(private),
		adaptation.WithMetrics(metrics{rt}),
	}
	for _, o := range opts {
		o(&aopts)
	}
	r, err := adaptation.New("test-runtime", "v0.0.1", rt.sync, rt.update, aopts...)
	if err != nil {
		t.Fatalf("adaptation.New: %v", err)
	}
	if err := r.Start(); err != nil {
		t.Fatalf("starting the NRI runtime side: %v", err)
	}
	rt.mu.Lock()
	rt.r, rt.started = r, true
	rt.mu.Unlock()
	t.Cleanup(rt.Stop)
	if rt.proxy, err = startProxy(sock, upstream); err != nil {
		t.Fatal(err)
	}
	return rt
}

// Stop closes every plugin connection and stops the runtime (it kills the
// pre-installed plugins it started). Idempotent.
func (rt *Runtime) Stop() {
	if rt.proxy != nil {
		rt.proxy.cut()
		rt.proxy = nil
	}
	if rt.r != nil {
		rt.r.Stop()
		rt.r = nil
	}
}

// SetContainers sets what the next Synchronize lists.
func (rt *Runtime) SetContainers(ctrs []*api.Container) {
	rt.mu.Lock()
	rt.ctrs = ctrs
	rt.mu.Unlock()
}

func (rt *Runtime) sync(ctx context.Context, cb adaptation.SyncCB) error {
	rt.mu.Lock()
	ctrs := rt.ctrs
	rt.mu.Unlock()
	_, err := cb(ctx, nil, ctrs)
	rt.mu.Lock()
	if rt.started {
		rt.syncs++
	}
	rt.mu.Unlock()
	return err
}

func (rt *Runtime) countUpdated() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.joined < rt.syncs {
		rt.joined = rt.syncs
		close(rt.changed)
		rt.changed = make(chan struct{})
	}
}

func (rt *Runtime) update(context.Context, []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	return nil, nil
}

// WaitJoined waits until n external plugins in all have registered,
// synchronized and joined the runtime's list, so that the next request
// reaches them. Requests must not run meanwhile: they update the plugin
// count too.
func (rt *Runtime) WaitJoined(n int, within time.Duration) {
	rt.t.Helper()
	deadline := time.After(within)
	for {
		rt.mu.Lock()
		joined, changed := rt.joined, rt.changed
		rt.mu.Unlock()
		if joined >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			rt.t.Fatalf("%d external plugin(s) joined the runtime within %s, want %d", joined, within, n)
		}
	}
}

// Create asks the plugins about a new container, as CRI CreateContainer does.
func (rt *Runtime) Create(id string, hooks *api.Hooks) (*api.CreateContainerResponse, error) {
	pod := &api.PodSandbox{Id: "pod-" + id, Name: "pod-" + id, Namespace: "default", Uid: "uid-" + id}
	ctr := &api.Container{Id: id, PodSandboxId: pod.Id, Name: "ctr-" + id, State: api.ContainerState_CONTAINER_CREATED, Hooks: hooks}
	return rt.r.CreateContainer(context.Background(), &api.CreateContainerRequest{Pod: pod, Container: ctr})
}

// Remove tells the plugins a container was removed.
func (rt *Runtime) Remove(id string) {
	rt.t.Helper()
	pod := &api.PodSandbox{Id: "pod-" + id, Name: "pod-" + id, Namespace: "default"}
	ctr := &api.Container{Id: id, PodSandboxId: pod.Id, Name: "ctr-" + id, State: api.ContainerState_CONTAINER_STOPPED}
	if err := rt.r.RemoveContainer(context.Background(), &api.RemoveContainerRequest{Pod: pod, Container: ctr}); err != nil {
		rt.t.Fatalf("RemoveContainer %s: %v", id, err)
	}
}

// Running is a container the runtime lists at Synchronize.
func Running(id string, hooks *api.Hooks) *api.Container {
	return &api.Container{Id: id, PodSandboxId: "pod-" + id, Name: "ctr-" + id,
		State: api.ContainerState_CONTAINER_RUNNING, Hooks: hooks}
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

type metrics struct{ rt *Runtime }

func (metrics) RecordPluginInvocation(string, string, error)                                      {}
func (metrics) RecordPluginLatency(string, string, time.Duration)                                 {}
func (metrics) RecordPluginAdjustments(string, string, *adaptation.ContainerAdjustment, int, int) {}
func (m metrics) UpdatePluginCount(int)                                                           { m.rt.countUpdated() }

type quietLog struct{}

func (quietLog) Debugf(context.Context, string, ...any) {}
func (quietLog) Infof(context.Context, string, ...any)  {}
func (quietLog) Warnf(context.Context, string, ...any)  {}
func (quietLog) Errorf(context.Context, string, ...any) {}
