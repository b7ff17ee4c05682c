package nri

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	nrilog "github.com/containerd/nri/pkg/log"

	"github.com/leakguard/leakguard/pkg/logging"
)

// logs is the plugin's logger, replaceable while requests are served: a
// pre-installed plugin learns its log file from the runtime's drop-in
// config only once connected.
type logs struct {
	cur     atomic.Pointer[slog.Logger]
	mu      sync.Mutex // serialises open; guards closeFn
	closeFn func()
}

// open switches to JSON lines at level in file (appended; errors also on
// stderr), or on stderr when file is empty.
func (l *logs) open(file, level string, stderr io.Writer) error {
	lvl, err := ParseLevel(level)
	if err != nil {
		return &ConfigError{err}
	}
	var (
		next    *slog.Logger
		closeFn = func() {}
	)
	if file == "" {
		next = slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	} else {
		next, closeFn = logging.New(file, lvl, stderr)
	}
	l.mu.Lock()
	prev := l.closeFn
	l.cur.Store(next.With("plugin", "leakguard-nri"))
	l.closeFn = closeFn
	l.mu.Unlock()
	if prev != nil {
		prev()
	}
	return nil
}

func (l *logs) get() *slog.Logger { return l.cur.Load() }

func (l *logs) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closeFn != nil {
		l.closeFn()
		l.closeFn = nil
	}
}

// stubLogger carries the NRI stub's messages into our log. The stub logs
// each connection attempt at info level; those go to debug so that an
// unreachable runtime is reported once per state change, by us.
type stubLogger struct{ l *logs }

func (s stubLogger) Debugf(ctx context.Context, f string, a ...any) {
	s.log(ctx, slog.LevelDebug, f, a)
}
func (s stubLogger) Infof(ctx context.Context, f string, a ...any) { s.log(ctx, slog.LevelDebug, f, a) }
func (s stubLogger) Warnf(ctx context.Context, f string, a ...any) { s.log(ctx, slog.LevelWarn, f, a) }
func (s stubLogger) Errorf(ctx context.Context, f string, a ...any) {
	s.log(ctx, slog.LevelError, f, a)
}

func (s stubLogger) log(ctx context.Context, level slog.Level, f string, a []any) {
	l := s.l.get()
	if l.Enabled(ctx, level) {
		l.Log(ctx, level, fmt.Sprintf(f, a...), "source", "nri-stub")
	}
}

// StubLogger is the plugin's log as the NRI library's logger interface, for
// a command to install with the library's log.Set.
func (p *Plugin) StubLogger() nrilog.Logger { return stubLogger{&p.logs} }
