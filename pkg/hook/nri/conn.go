package nri

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/containerd/ttrpc"
)

const (
	defaultFirstRetry = 100 * time.Millisecond
	defaultRetryCap   = 2 * time.Second
	// startTimeout bounds registration: the runtime allows 5 s for it and
	// 2 s for Configure. A runtime that dies between the two leaves the stub
	// waiting for ever; past this, the attempt is abandoned.
	startTimeout = 10 * time.Second
	// stableSession is how long a connection must last for the back-off to
	// start again from its minimum: a runtime that accepts and drops the
	// plugin at once is retried ever more slowly, never in a loop.
	stableSession = 10 * time.Second
)

// Run serves the runtime until ctx is done. A pre-installed plugin serves
// the connection it was started with and returns nil when the runtime
// closes it (the runtime starts a new instance when it comes back). An
// external plugin dials Options.Socket, and again with capped exponential
// back-off whenever the dial fails or the connection is lost; it reports
// each change of state once, retries only at debug level. Run returns a
// *ConfigError when the plugin cannot run as configured.
func (p *Plugin) Run(ctx context.Context) error {
	defer p.logs.close()
	defer p.LogStats("leakguard-nri stopped")
	// A pre-installed plugin learns its state file from the drop-in, in
	// Configure: the heartbeat runs in any case and writes once one is set.
	p.writeState()
	hb, stop := context.WithCancel(ctx)
	defer func() {
		stop()
		p.disconnected()
		p.writeState()
	}()
	go p.heartbeat(hb)
	if p.opts.Preinstalled {
		connected, err := p.session(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return err
		case connected:
			p.log().Info("the runtime closed the connection; exiting (it starts the plugin again when it restarts)")
		}
		return nil
	}

	if err := p.waitHook(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	bo := backoff{min: p.opts.BackoffMin, max: p.opts.BackoffMax}
	quiet := false // a failure to connect was reported; say nothing until connected
	for attempt := 1; ; attempt++ {
		begin := time.Now()
		connected, err := p.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if ce := (*ConfigError)(nil); errors.As(err, &ce) {
			return err
		}
		if connected {
			if time.Since(begin) >= stableSession {
				bo.reset()
			}
			p.log().Warn("lost the connection to the runtime; reconnecting with back-off", "socket", p.opts.Socket)
			quiet, attempt = true, 0
		}
		delay := bo.next()
		switch {
		case err == nil:
		case !quiet:
			p.log().Warn("cannot connect to the runtime; retrying with back-off, reported again once connected",
				"socket", p.opts.Socket, "error", err, "retry_in", delay.String())
			quiet = true
		default:
			p.log().Debug("retrying the connection to the runtime", "socket", p.opts.Socket, "attempt", attempt,
				"error", err, "retry_in", delay.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}

// waitHook returns once the hook binary is usable (Options.WaitForHook), or
// ctx is done; a hook that exists but is unusable is a *ConfigError.
func (p *Plugin) waitHook(ctx context.Context) error {
	if !p.opts.WaitForHook {
		return nil
	}
	s, _ := p.current()
	poll := p.opts.HookPoll
	if poll <= 0 {
		poll = time.Second
	}
	waited := false
	for {
		err := CheckHook(s.HookPath)
		switch {
		case err == nil:
			if waited {
				p.log().Info("the hook is installed; connecting to the runtime", "hook", s.HookPath)
			}
			return nil
		case !hookMissing(s.HookPath):
			return &ConfigError{err}
		case !waited:
			p.log().Warn("waiting for the hook to be installed (leakguardctl install --hook-dir); not connecting to the runtime until then",
				"hook", s.HookPath)
			waited = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

// session makes one connection, registers, and serves it until the runtime
// closes it or ctx is done. It returns whether registration succeeded.
func (p *Plugin) session(ctx context.Context) (bool, error) {
	closed := make(chan struct{})
	var once sync.Once
	opts := []stub.Option{
		stub.WithLogger(stubLogger{&p.logs}),
		stub.WithOnClose(func() { once.Do(func() { close(closed) }) }),
	}
	sp := &sessionPlugin{Plugin: p}
	opts = append(opts, stub.WithTTRPCOptions(nil, []ttrpc.ServerOpt{ttrpc.WithUnaryServerInterceptor(sp.intercept)}))
	var dialed dialedConn
	if !p.opts.Preinstalled {
		// A pre-installed plugin gets its index and name from the runtime
		// (NRI_PLUGIN_IDX/NAME): the stub refuses a second index.
		opts = append(opts, stub.WithSocketPath(p.opts.Socket), stub.WithPluginName(p.opts.Name),
			stub.WithPluginIdx(p.opts.Idx), stub.WithDialer(dialed.dial))
	}
	s, err := stub.New(sp, opts...)
	if err != nil {
		return false, &ConfigError{fmt.Errorf("cannot create the NRI plugin: %w", err)}
	}

	started := make(chan error, 1)
	go func() { started <- s.Start(ctx) }()
	pending := true // Start has not returned
	select {
	case err = <-started:
		pending = false
	case <-dialed.lost():
		// The stub does not notice a runtime that goes away between
		// registration and Configure: it waits for Configure for ever.
		err = errors.New("the runtime closed the connection during registration")
	case <-time.After(startTimeout):
		err = fmt.Errorf("registration with the runtime did not complete within %s", startTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		// Unblocks a Start still waiting on the connection.
		dialed.close()
		if pending {
			sp.unstick(ctx, s, started, dialed.sent())
		}
		p.disconnected()
		return false, err
	}

	select {
	case <-closed:
	case <-ctx.Done():
		s.Stop()
	}
	s.Wait()
	p.disconnected()
	return true, nil
}

// sessionPlugin is the plugin as one connection's stub sees it: the
// plugin's handlers, and a Configure that fails once the attempt is
// abandoned.
type sessionPlugin struct {
	*Plugin
	abandoned atomic.Bool
	// configurer is who sent the first Configure let into the stub (the
	// stub takes one at a time: it writes its fields unlocked and answers
	// Start on a channel of one): none yet, the runtime, or unstick.
	configurer atomic.Int32
}

const (
	configuredByNone int32 = iota
	configuredByRuntime
	configuredByUnstick
)

// configureMethod is the stub's Configure as ttrpc names it.
const configureMethod = "/nri.pkg.api.v1alpha1.Plugin/Configure"

// intercept refuses the runtime's Configure when unstick's came first.
func (sp *sessionPlugin) intercept(ctx context.Context, u ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
	if info.FullMethod == configureMethod {
		sp.configurer.CompareAndSwap(configuredByNone, configuredByRuntime)
		if sp.configurer.Load() == configuredByUnstick {
			return nil, errors.New("registration abandoned: the runtime closed the connection")
		}
	}
	return m(ctx, u)
}

func (sp *sessionPlugin) Configure(ctx context.Context, config, runtime, version string) (api.EventMask, error) {
	if sp.abandoned.Load() {
		return 0, errors.New("registration abandoned: the runtime closed the connection")
	}
	return sp.Plugin.Configure(ctx, config, runtime, version)
}

// unstick frees a stub whose runtime closed the connection between
// registration and Configure. containerd/nri's Start then waits for
// Configure for ever, holding the stub's lock, and the stub's close handler
// waits for that lock: each such attempt would leave its goroutines behind.
// The stub's own Configure request handler, called here with the attempt
// abandoned, fails the registration: Start returns and releases it all.
func (sp *sessionPlugin) unstick(ctx context.Context, s stub.Stub, started <-chan error, wrote <-chan struct{}) {
	c, ok := s.(interface {
		Configure(context.Context, *api.ConfigureRequest) (*api.ConfigureResponse, error)
	})
	if !ok {
		return
	}
	sp.abandoned.Store(true)
	select {
	case <-started: // Start returned meanwhile: nothing is stuck
		return
	case <-wrote:
		// The registration request went out: Start made its Configure
		// channel before sending it and now waits on it (calling the
		// handler earlier would race Start's set-up and block for ever).
	case <-time.After(time.Second):
		// Nothing was sent: Start is still setting up, and its
		// registration fails on the closed connection.
		select {
		case <-started:
		case <-time.After(time.Second):
			sp.Plugin.log().Warn("an abandoned NRI registration did not end; its goroutines are left behind")
		}
		return
	}
	if sp.configurer.CompareAndSwap(configuredByNone, configuredByUnstick) {
		go c.Configure(context.WithoutCancel(ctx), &api.ConfigureRequest{NRIVersion: "abandoned"}) //nolint:errcheck // it fails on purpose
	} // else the runtime's Configure is in the stub: it answers Start
	select {
	case <-started:
	case <-time.After(time.Second):
		p := sp.Plugin
		p.log().Warn("an abandoned NRI registration did not end; its goroutines are left behind")
	}
}

// connected is called once the runtime has configured the plugin, before it
// sends Synchronize or any event.
func (p *Plugin) connected(runtime, version string) {
	p.stats.connects.Add(1)
	p.conn.set(true)
	mode, socket := "external", p.opts.Socket
	if p.opts.Preinstalled {
		mode, socket = "pre-installed", "(connection from the runtime)"
	}
	p.log().Info("connected to the runtime", "runtime", runtime, "runtime_version", version,
		"mode", mode, "socket", socket, "id", p.opts.Idx+"-"+p.opts.Name, "pid", os.Getpid())
	p.writeState()
}

func (p *Plugin) disconnected() {
	if up, _ := p.conn.get(); up {
		p.conn.set(false)
		p.stats.disconnects.Add(1)
		p.writeState()
	}
}

// dialedConn keeps the connection the stub dials, to close it when an
// attempt is abandoned, and tells when the runtime closed it.
type dialedConn struct {
	mu    sync.Mutex
	c     net.Conn
	gone  chan struct{} // closed at the connection's first read error
	wrote chan struct{} // closed at the connection's first successful write
}

func (d *dialedConn) dial(path string) (net.Conn, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.init()
	d.c = &watchedConn{Conn: c, gone: d.gone, wrote: d.wrote}
	return d.c, nil
}

func (d *dialedConn) init() {
	if d.gone == nil {
		d.gone, d.wrote = make(chan struct{}), make(chan struct{})
	}
}

// sent is closed once the plugin wrote to the dialed connection (nil before
// a dial, which blocks).
func (d *dialedConn) sent() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.init()
	return d.wrote
}

// lost is closed once the dialed connection failed a read (nil before a
// dial, which blocks: a pre-installed plugin's connection is not watched).
func (d *dialedConn) lost() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.init()
	return d.gone
}

// watchedConn closes gone at its first read error and wrote at its first
// successful write.
type watchedConn struct {
	net.Conn
	once, wonce sync.Once
	gone, wrote chan struct{}
}

func (w *watchedConn) Write(b []byte) (int, error) {
	n, err := w.Conn.Write(b)
	if n > 0 {
		w.wonce.Do(func() { close(w.wrote) })
	}
	return n, err
}

func (w *watchedConn) Read(b []byte) (int, error) {
	n, err := w.Conn.Read(b)
	if err != nil {
		w.once.Do(func() { close(w.gone) })
	}
	return n, err
}

func (d *dialedConn) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c != nil {
		d.c.Close()
	}
}

// backoff is a capped exponential delay.
type backoff struct{ min, max, cur time.Duration }

func (b *backoff) next() time.Duration {
	if b.min <= 0 {
		b.min = defaultFirstRetry
	}
	if b.max <= 0 {
		b.max = defaultRetryCap
	}
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }
