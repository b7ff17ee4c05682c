// Package logging builds the plugin's logger. stdout is the CNI result, so
// logs never go there: structured JSON lines go to the configured log file,
// and errors (and, without a log file, warnings) also go to stderr, which
// runtimes capture.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
)

// New returns a logger and a func that closes the log file. A log file that
// cannot be opened, or that OpenFile refuses (not a regular file, ...), is
// reported on stderr with the reason and does not stop the plugin: a
// missing log must never make DEL fail.
func New(logFile string, level slog.Level, stderr io.Writer) (*slog.Logger, func()) {
	stderrMin := slog.LevelError
	var file slog.Handler
	closeFn := func() {}
	if logFile != "" {
		f, err := OpenFile(logFile, 0o600)
		if err != nil {
			fmt.Fprintf(stderr, "leakguard: cannot open log file %s: %v; logging to stderr\n", logFile, err)
		} else {
			file = slog.NewJSONHandler(f, &slog.HandlerOptions{Level: level})
			closeFn = func() { f.Close() }
		}
	}
	if file == nil {
		stderrMin = max(slog.LevelWarn, level)
	}
	h := &tee{
		file:      file,
		stderr:    slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: stderrMin}),
		stderrMin: stderrMin,
	}
	return slog.New(h), closeFn
}

// tee sends records to the file handler (if any) and, from stderrMin up, to
// stderr.
type tee struct {
	file      slog.Handler
	stderr    slog.Handler
	stderrMin slog.Level
}

func (t *tee) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= t.stderrMin || (t.file != nil && t.file.Enabled(ctx, l))
}

func (t *tee) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if t.file != nil && t.file.Enabled(ctx, r.Level) {
		err = t.file.Handle(ctx, r.Clone())
	}
	if r.Level >= t.stderrMin {
		if e := t.stderr.Handle(ctx, r); err == nil {
			err = e
		}
	}
	return err
}

func (t *tee) WithAttrs(as []slog.Attr) slog.Handler {
	n := &tee{stderr: t.stderr.WithAttrs(as), stderrMin: t.stderrMin}
	if t.file != nil {
		n.file = t.file.WithAttrs(as)
	}
	return n
}

func (t *tee) WithGroup(name string) slog.Handler {
	n := &tee{stderr: t.stderr.WithGroup(name), stderrMin: t.stderrMin}
	if t.file != nil {
		n.file = t.file.WithGroup(name)
	}
	return n
}
