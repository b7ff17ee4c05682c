package ondelete

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/leakguard/leakguard/pkg/hook/nristate"
)

const (
	// DefaultSettle is how long after leakguard-nri's disconnection the hook
	// stays: a container whose spec it adjusted just before is created by
	// the runtime right after, and runc execs the hook then.
	DefaultSettle = time.Second
	// pollEvery is how often the state file is read while waiting.
	pollEvery = 100 * time.Millisecond
)

// NRIReleased returns the check UninstallStaged waits on before removing
// the hook: leakguard-nri reports, through its state file at path, that it
// is disconnected (for settle at least), or the file is absent (no plugin
// reports there) or stale (its writer is gone). It polls until then or
// until ctx is done, and then says what it last saw. An empty path is no
// knowledge at all: the hook stays.
func NRIReleased(path string, settle time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		if path == "" {
			return errors.New("no NRI state file to tell whether leakguard-nri still adds the hook (--nri-state is empty)")
		}
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		for {
			err := released(path, settle, time.Now())
			if err == nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w, and the time to wait is over", err)
			case <-t.C:
			}
		}
	}
}

// released says why the hook must stay at now, or nil.
func released(path string, settle time.Duration, now time.Time) error {
	s, err := nristate.Read(path)
	switch {
	case errors.Is(err, nristate.ErrNoState):
		return nil
	case err != nil:
		// A file it cannot read says nothing either way: wait for a good one.
		return fmt.Errorf("leakguard-nri's state file is unreadable: %w", err)
	case now.Sub(s.Updated) > nristate.StaleAfter:
		return nil // its writer is gone
	case s.Connected:
		return fmt.Errorf("leakguard-nri (pid %d) still reports it is connected to the runtime", s.PID)
	}
	since := s.Since
	if since.IsZero() || since.After(s.Updated) {
		since = s.Updated
	}
	if now.Sub(since) < settle {
		return fmt.Errorf("leakguard-nri (pid %d) disconnected %v ago, under %v", s.PID, now.Sub(since).Round(time.Millisecond), settle)
	}
	return nil
}
