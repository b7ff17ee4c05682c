// Package hook is what leakguard-hook does for one container: decide from
// the OCI state and bundle whether the container needs protecting, and if so
// turn kernel_nfsd off in the gssproxy config inside its rootfs.
package protect

import (
	"context"
	"io"
	"log/slog"

	"github.com/leakguard/leakguard/pkg/hook/bundle"
	"github.com/leakguard/leakguard/pkg/hook/hookpolicy"
)

// Decision is the outcome logged for each container.
type Decision string

const (
	// Edited: at least one kernel_nfsd setting was turned off.
	Edited Decision = "edited"
	// Clean: the container was checked and nothing was on.
	Clean Decision = "clean"
	// Skipped: the container was not checked; Reason says why.
	Skipped Decision = "skipped"
	// Risk: some config gssproxy may read could not be checked or edited
	// (bind mount, other mount, encoding); see Risks. Other files were edited.
	Risk Decision = "risk"
	// Failed: an internal error; see Err.
	Failed Decision = "error"
)

// Skip reasons.
const (
	ReasonModeOff       = "mode off"
	ReasonAnnotation    = "annotation " + bundle.Annotation + "=" + bundle.AnnotationKeep
	ReasonHostNetwork   = "host network namespace"
	ReasonNotPrivileged = "not privileged"
)

// Result is everything logged about one container.
type Result struct {
	ID         string
	Privileged bool
	Decision   Decision
	Reason     string
	// Changed lists the files edited, as paths inside the container.
	Changed []string
	// Settings is how many kernel_nfsd assignments were turned off.
	Settings int
	// Risks lists configs gssproxy may read that were left alone, with why.
	Risks []string
	// Ignored lists names gssproxy would skip too (not regular files).
	Ignored []string
	Err     error
	// PolicyErr is why the policy file could not be used; the default
	// policy was applied instead. Set by the caller that loaded the policy.
	PolicyErr error
}

// Run handles one hook invocation: state is the runtime's stdin.
func Run(state io.Reader, p hookpolicy.Policy) Result {
	var r Result
	st, err := bundle.ReadState(state)
	if st != nil {
		r.ID = st.ID
	}
	if p.Mode == hookpolicy.ModeOff {
		r.Decision, r.Reason = Skipped, ReasonModeOff
		return r
	}
	if err != nil {
		r.Decision, r.Err = Failed, err
		return r
	}
	c, err := bundle.Load(st)
	if err != nil {
		r.Decision, r.Err = Failed, err
		return r
	}
	r.Privileged = c.Privileged()
	switch {
	case c.OptedOut():
		r.Decision, r.Reason = Skipped, ReasonAnnotation
	case c.HostNetwork():
		r.Decision, r.Reason = Skipped, ReasonHostNetwork
	case !r.Privileged && p.Mode != hookpolicy.ModeAll:
		r.Decision, r.Reason = Skipped, ReasonNotPrivileged
	default:
		protect(c, &r)
	}
	return r
}

// Log writes r as one structured line.
func (r Result) Log(l *slog.Logger) {
	level := slog.LevelInfo
	switch r.Decision {
	case Risk:
		level = slog.LevelWarn
	case Failed:
		level = slog.LevelError
	}
	if r.PolicyErr != nil && level < slog.LevelWarn {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("id", r.ID),
		slog.Bool("privileged", r.Privileged),
		slog.String("decision", string(r.Decision)),
		slog.Any("files_changed", nonNil(r.Changed)),
	}
	if r.Settings > 0 {
		attrs = append(attrs, slog.Int("settings_changed", r.Settings))
	}
	if r.Reason != "" {
		attrs = append(attrs, slog.String("reason", r.Reason))
	}
	if len(r.Risks) > 0 {
		attrs = append(attrs, slog.Any("risks", r.Risks))
	}
	if len(r.Ignored) > 0 {
		attrs = append(attrs, slog.Any("ignored", r.Ignored))
	}
	if r.Err != nil {
		attrs = append(attrs, slog.String("error", r.Err.Error()))
	}
	if r.PolicyErr != nil {
		attrs = append(attrs, slog.String("policy_error", r.PolicyErr.Error()))
	}
	l.LogAttrs(context.Background(), level, "leakguard-hook", attrs...)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
