// Package nri is leakguard-nri: an NRI plugin that adds leakguard-hook as a
// createRuntime hook to every container the runtime (containerd, CRI-O)
// creates. NRI says nothing about privilege, so the plugin adds the hook to
// all containers and the hook decides from config.json, as it does when
// delivered by hooks.d or a base spec. The plugin fails open: nothing it
// gets wrong fails a container's creation unless the hook policy says
// failClosed.
package nri

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/api"

	"github.com/leakguard/leakguard/pkg/hook/hookpolicy"
)

// Plugin serves the runtime's NRI requests. Its methods are found by the
// NRI stub by type assertion: the events it subscribes to are
// CreateContainer (inject the hook) and RemoveContainer (forget it).
type Plugin struct {
	opts  Options
	logs  logs
	stats counters
	conn  connState
	lat   latency

	mu       sync.Mutex
	settings Settings
	hookArgs []string // the hook's argv, built once per settings
	// seen holds the containers this process knows about: asked about in
	// CreateContainer or listed by a Synchronize, and not removed since.
	seen map[string]struct{}
}

// New checks opts and returns a plugin ready to Run.
func New(opts Options) (*Plugin, error) {
	if opts.Stderr == nil {
		return nil, fmt.Errorf("nri: Options.Stderr is nil")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	p := &Plugin{opts: opts, seen: map[string]struct{}{}}
	if err := p.logs.open(opts.LogFile, opts.LogLevel, opts.Stderr); err != nil {
		return nil, err
	}
	p.setSettings(opts.Settings)
	return p, nil
}

func (p *Plugin) log() *slog.Logger { return p.logs.get() }

func (p *Plugin) setSettings(s Settings) {
	args := []string{"leakguard-hook"}
	if s.HookConfig != "" {
		args = append(args, "--config", s.HookConfig)
	}
	p.mu.Lock()
	p.settings, p.hookArgs = s, args
	p.mu.Unlock()
}

func (p *Plugin) current() (Settings, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.settings, p.hookArgs
}

// Stats returns a snapshot of the counters; safe from any goroutine.
func (p *Plugin) Stats() Stats {
	connected, since := p.conn.get()
	return Stats{
		Connected:      connected,
		Since:          since,
		Connects:       p.stats.connects.Load(),
		Disconnects:    p.stats.disconnects.Load(),
		Injected:       p.stats.injected.Load(),
		AlreadyHooked:  p.stats.alreadyHooked.Load(),
		Skipped:        p.stats.skipped.Load(),
		Refused:        p.stats.refused.Load(),
		Missed:         p.stats.missed.Load(),
		MissedUnhooked: p.stats.missedUnhooked.Load(),
		Create:         p.lat.stats(),
	}
}

// LogStats writes the counters and CreateContainer latency as one log line.
func (p *Plugin) LogStats(msg string) {
	s := p.Stats()
	p.log().Info(msg, "connected", s.Connected, "connects", s.Connects, "disconnects", s.Disconnects,
		"injected", s.Injected, "already_hooked", s.AlreadyHooked, "skipped", s.Skipped, "refused", s.Refused,
		"missed", s.Missed, "missed_unhooked", s.MissedUnhooked,
		"create_count", s.Create.Count, "create_p50_us", micros(s.Create.P50),
		"create_p99_us", micros(s.Create.P99), "create_max_us", micros(s.Create.Max))
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// Configure is the runtime's first request on a connection. config is the
// runtime's drop-in for a pre-installed plugin (empty for an external one).
// A pre-installed plugin checks its settings here, so that the reason it
// cannot run reaches the runtime's log; the error makes it exit 2.
func (p *Plugin) Configure(_ context.Context, config, runtime, version string) (api.EventMask, error) {
	s, _ := p.current()
	if config != "" {
		merged, err := s.merge(config)
		if err == nil {
			err = merged.validate(false) // before a log file named there is opened
		}
		if err != nil {
			return 0, p.configFailed(err)
		}
		if merged.LogFile != s.LogFile || merged.LogLevel != s.LogLevel {
			if err := p.logs.open(merged.LogFile, merged.LogLevel, p.opts.Stderr); err != nil {
				return 0, p.configFailed(err)
			}
		}
		s = merged
	}
	if config != "" || p.opts.Preinstalled {
		// Checked once the log is where the drop-in wants it, to be read there.
		if err := CheckHook(s.HookPath); err != nil {
			return 0, p.configFailed(&ConfigError{err})
		}
		p.setSettings(s)
	}
	p.log().Debug("configured by the runtime", "hook", s.HookPath, "hook_config", s.HookConfig, "drop_in", config != "")
	p.connected(runtime, version)
	return 0, nil
}

func (p *Plugin) configFailed(err error) error {
	p.log().Error("cannot run with this configuration", "error", err)
	return err
}

// Synchronize is the runtime's list of its pods and containers (created or
// running), sent once per connection before any other event. Containers this
// process was not asked about started while it was away.
func (p *Plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	s, _ := p.current()
	podByID := make(map[string]*api.PodSandbox, len(pods))
	for _, pod := range pods {
		podByID[pod.GetId()] = pod
	}
	listed := make(map[string]struct{}, len(ctrs))
	var missed, unhooked int
	p.mu.Lock()
	for _, c := range ctrs {
		listed[c.GetId()] = struct{}{}
		if _, ok := p.seen[c.GetId()]; ok {
			continue
		}
		missed++
		hooked := hasHook(c.GetHooks(), s.HookPath)
		if !hooked {
			unhooked++
		}
		pod := podByID[c.GetPodSandboxId()]
		attrs := []any{"container", c.GetId(), "name", c.GetName(),
			"pod_namespace", pod.GetNamespace(), "pod", pod.GetName(),
			"state", c.GetState().String(), "has_hook", hooked}
		if hooked {
			p.log().Info("container started while leakguard-nri was away; its spec runs leakguard-hook", attrs...)
		} else {
			p.log().Warn("container started while leakguard-nri was away; not protected by leakguard-hook", attrs...)
		}
	}
	// Containers gone while away were never reported removed: forget them.
	p.seen = listed
	p.mu.Unlock()
	p.stats.missed.Add(uint64(missed))
	p.stats.missedUnhooked.Add(uint64(unhooked))
	p.log().Info("synchronized with the runtime", "pods", len(pods), "containers", len(ctrs),
		"missed", missed, "missed_unhooked", unhooked,
		"missed_total", p.stats.missed.Load())
	return nil, nil
}

// CreateContainer adds the hook to the container's spec. It never fails the
// container because of the plugin itself, unless the hook policy says
// failClosed; even a panic is caught. The time spent here is measured.
func (p *Plugin) CreateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	start := time.Now()
	var (
		adj *api.ContainerAdjustment
		err error
	)
	func() {
		defer func() {
			if r := recover(); r != nil {
				adj, err = nil, p.internalError(ctr, fmt.Errorf("panic: %v", r))
			}
		}()
		adj, err = p.adjust(ctr)
	}()
	d := time.Since(start)
	p.lat.add(d)
	p.log().Debug("CreateContainer", "container", ctr.GetId(), "name", ctr.GetName(),
		"pod", pod.GetName(), "hooked", adj != nil, "duration_us", micros(d))
	return adj, nil, err
}

// adjust is CreateContainer's decision: the hook added, or nothing (with
// the error that refuses the container under failClosed).
func (p *Plugin) adjust(ctr *api.Container) (*api.ContainerAdjustment, error) {
	p.mu.Lock()
	p.seen[ctr.GetId()] = struct{}{}
	p.mu.Unlock()

	s, args := p.current()
	if hasHook(ctr.GetHooks(), s.HookPath) {
		p.stats.alreadyHooked.Add(1)
		p.log().Debug("leakguard-hook already in the container's spec, not added twice", "container", ctr.GetId())
		return nil, nil
	}
	if err := CheckHook(s.HookPath); err != nil {
		return nil, p.internalError(ctr, err)
	}
	// A new message per reply: replies are marshalled concurrently.
	adj := &api.ContainerAdjustment{}
	adj.AddHooks(&api.Hooks{CreateRuntime: []*api.Hook{{
		Path:    s.HookPath,
		Args:    args,
		Timeout: &api.OptionalInt{Value: HookTimeout},
	}}})
	p.stats.injected.Add(1)
	return adj, nil
}

// internalError decides what an error of the plugin's own does to the
// container: logged and the container created without the hook, or, under
// a hook policy read successfully with failClosed, the container refused.
// The policy is read only here, so the common path costs no file access and
// an edited policy counts at the next error.
func (p *Plugin) internalError(ctr *api.Container, err error) error {
	s, _ := p.current()
	policy, perr := hookpolicy.LoadOrDefault(s.HookConfig)
	attrs := []any{"container", ctr.GetId(), "name", ctr.GetName(), "error", err}
	if perr != nil {
		attrs = append(attrs, "policy_error", perr)
	}
	if policy.FailClosed {
		p.stats.refused.Add(1)
		p.log().Error("container refused: leakguard-hook cannot be added (hook policy failClosed)", attrs...)
		return fmt.Errorf("leakguard-nri: container %q not protected: %w (hook policy failClosed)", ctr.GetName(), err)
	}
	p.stats.skipped.Add(1)
	p.log().Warn("container created without leakguard-hook", attrs...)
	return nil
}

// RemoveContainer forgets the container, so that the set of containers this
// process knows stays the size of the node's.
func (p *Plugin) RemoveContainer(_ context.Context, _ *api.PodSandbox, ctr *api.Container) error {
	p.mu.Lock()
	delete(p.seen, ctr.GetId())
	p.mu.Unlock()
	return nil
}

// Shutdown is the runtime telling its plugins it is going away.
func (p *Plugin) Shutdown(context.Context) {
	p.log().Info("the runtime is shutting down")
}

// hasHook reports whether hooks already run the leakguard hook at a stage
// before the container starts: at path, or any binary named leakguard-hook
// (the hook installed by base_runtime_spec or hooks.d elsewhere).
func hasHook(hooks *api.Hooks, path string) bool {
	for _, stage := range [][]*api.Hook{hooks.GetCreateRuntime(), hooks.GetPrestart()} {
		for _, h := range stage {
			if h.GetPath() == path || filepath.Base(h.GetPath()) == hookName {
				return true
			}
		}
	}
	return false
}

// hookName is leakguard-hook's file name wherever it is installed.
const hookName = "leakguard-hook"
