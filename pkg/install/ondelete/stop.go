package ondelete

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/leakguard/leakguard/pkg/install"
)

// DefaultTimeout bounds the whole stop (decision and uninstall), well below
// a pod's terminationGracePeriodSeconds (30 s by default): the kubelet
// SIGKILLs the agent after that, wherever it is.
const DefaultTimeout = 10 * time.Second

// Options configure Stop.
type Options struct {
	// Installer is the agent's installer, its watch already stopped (a
	// watch still running would put the entry back).
	Installer *install.Installer
	// OwnFile is leakguard's own file's name ("" for the installer's).
	OwnFile string
	// ServiceAccountDir holds token and ca.crt (DefaultServiceAccountDir).
	ServiceAccountDir string
	// Getenv reads the environment (os.Getenv).
	Getenv func(string) string
	// NRIState is leakguard-nri's state file (see NRIReleased).
	NRIState string
	// Timeout bounds the whole stop (DefaultTimeout); APITimeout the
	// questions to the API server (DefaultAPITimeout, at most Timeout).
	Timeout, APITimeout time.Duration
	// Settle is DefaultSettle when 0.
	Settle time.Duration
	// Log receives the decision and what was removed or kept.
	Log *slog.Logger
	// Watcher, when set, has followed the DaemonSet since the agent
	// started: when the API server no longer answers (delete -k removed
	// the service account and its rights), the deletion it saw decides.
	Watcher *Watcher
}

// watcherWait bounds the wait for the Watcher to read a deletion event
// that may come just after the SIGTERM.
const watcherWait = 2 * time.Second

// Result is what Stop decided and did.
type Result struct {
	Verdict Verdict
	// Report is the uninstall's, when the verdict was to uninstall.
	Report install.UninstallReport
	// Err is the uninstall's problem (binaries kept and why).
	Err error
}

// Stop decides whether the agent's DaemonSet is gone and, if so,
// uninstalls: entry first, then leakguard's binary, then the hook and NRI
// plugin binaries once leakguard-nri is disconnected (kept past the
// timeout). Otherwise everything stays. Every outcome is logged.
func Stop(ctx context.Context, o Options) Result {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.APITimeout <= 0 {
		o.APITimeout = DefaultAPITimeout
	}
	o.APITimeout = min(o.APITimeout, o.Timeout)
	if o.ServiceAccountDir == "" {
		o.ServiceAccountDir = DefaultServiceAccountDir
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Settle <= 0 {
		o.Settle = DefaultSettle
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	var res Result
	cfg, err := ConfigFromEnv(o.Getenv, o.ServiceAccountDir)
	if err != nil {
		res.Verdict = keep("", "cannot ask the API server: %v", err)
	} else {
		res.Verdict = Decide(ctx, cfg, o.APITimeout)
	}
	if v := res.Verdict; !v.Uninstall && v.unanswered && o.Watcher != nil {
		if ds, reason, ok := o.Watcher.Deleted(watcherWait); ok {
			res.Verdict = Verdict{Uninstall: true, DaemonSet: ds, Reason: reason + " (now the API server: " + v.Reason + ")"}
		}
	}
	if !res.Verdict.Uninstall {
		log.Info("stopping; leakguard stays installed", "daemonset", res.Verdict.DaemonSet, "reason", res.Verdict.Reason)
		return res
	}
	log.Info("the DaemonSet is deleted: uninstalling leakguard", "daemonset", res.Verdict.DaemonSet, "reason", res.Verdict.Reason)
	res.Report, res.Err = o.Installer.UninstallStaged(ctx, o.OwnFile, NRIReleased(o.NRIState, o.Settle))
	if res.Err != nil {
		log.Warn("uninstalled in part", "removed_entries", res.Report.Edited, "removed_files", res.Report.Removed,
			"removed_binaries", res.Report.Binaries, "kept", res.Report.Kept, "reason", res.Err.Error())
		return res
	}
	log.Info("uninstalled", "removed_entries", res.Report.Edited, "removed_files", res.Report.Removed, "removed_binaries", res.Report.Binaries)
	return res
}
