// Package agent is the node agent behind `leakguardctl serve`: a scan of the
// node every interval (pkg/scan/leakscan), optionally followed by a reap of
// the leaks leakguard owns and a GC of stale records, and Prometheus metrics
// computed at scrape time from the last round's figures. The agent keeps
// numbers only, never a report, so its memory does not grow with the node's
// history.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/leakguard/leakguard/pkg/cniplugin/pluginconf"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/install"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/scan/leakscan"
)

// Defaults of Options.
const (
	DefaultInterval = 60 * time.Second
	// DefaultListen is the agent's HTTP address. 9787 is used by none of
	// the node agents found next to it (node_exporter 9100, kubelet
	// 10250/10255, kube-proxy 10249/10256, Calico felix 9091, Cilium
	// 9962-9965, istio-cni 15014, containerd's metrics 1338, Multus none).
	DefaultListen = ":9787"
)

// Options configure an Agent.
type Options struct {
	// StateDir and PinDir are leakguard's (the plugin's stateDir, pinDir).
	StateDir, PinDir string
	// Interval between scans (DefaultInterval); Recheck as leakscan's.
	Interval, Recheck time.Duration
	// Reap deletes, after each scan, the leaked host links a leakguard
	// record or tombstone owns, as `leakguardctl reap` does.
	Reap bool
	// GC runs leakguard's GC (no list of valid attachments: only records
	// whose netns is provably orphaned) for every network with records.
	GC bool
	// Installer, when set, runs in the same process: the chain metrics and
	// readiness come from it.
	Installer *install.Installer
	// ConfDir and BinDir, without an Installer, are inspected read-only
	// for the chain metric and readiness ("" ConfDir: not inspected).
	ConfDir, BinDir string
	// ReadyNeedsChain makes /readyz wait for leakguard to be in the chain.
	ReadyNeedsChain bool
	// NRIState is leakguard-nri's state file ("" for none).
	NRIState string
	// Log receives what the agent does; nil discards it.
	Log *slog.Logger
	// Stderr receives GC's own log lines (errors); nil discards them.
	Stderr io.Writer
}

// Agent runs the scans and serves their figures.
type Agent struct {
	opts Options
	log  *slog.Logger
	// Do runs f on a thread in the host netns; scans, reaps and GC run
	// inside it (tests run them in a throw-away node netns). Nil runs f
	// directly: the caller's thread is in the host netns.
	Do func(f func() error) error
	// GCFunc runs GC for one network; nil is leakguard's own (gc.go).
	GCFunc func(network string) (reaped int, err error)

	round sync.Mutex // one round at a time

	mu       sync.Mutex
	last     figures
	counters counters
	started  time.Time
	finished time.Time // end of the last round
}

// figures are the last scan's numbers.
type figures struct {
	ok                         bool
	at                         time.Time
	duration                   float64
	reachable, leakedNetns     int
	ownedLinks, orphanLinks    int
	gssArmedLeaked, doomed     int
	slabAvailable              bool
	slabEstimate, slabLower    int
	unreadable, discardedFiles int
}

type counters struct {
	scans, scanErrors     uint64
	reapedLinks, reapedGC uint64
	reapErrors, gcErrors  uint64
}

// New returns an Agent.
func New(opts Options) *Agent {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.StateDir == "" {
		opts.StateDir = pluginconf.DefaultStateDir
	}
	if opts.ConfDir != "" && opts.BinDir == "" {
		opts.BinDir = install.DefaultBinDir
	}
	if opts.Stderr == nil {
		opts.Stderr = io.Discard
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Agent{opts: opts, log: log, started: time.Now()}
}

// Run scans now and then every Interval until ctx is done.
func (a *Agent) Run(ctx context.Context) error {
	t := time.NewTicker(a.opts.Interval)
	defer t.Stop()
	for {
		// A round runs to its end once started (GC's calls bound their own
		// waits); ctx only stops the loop between rounds.
		a.ScanNow() //nolint:contextcheck // see above
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// ScanNow runs one round: scan, then reap and GC when enabled. Problems are
// logged and counted; the figures of a failed scan are those of the last
// good one, marked failed.
func (a *Agent) ScanNow() {
	a.round.Lock()
	defer a.round.Unlock()
	f, err := a.scan()
	a.mu.Lock()
	a.counters.scans++
	if err != nil {
		a.counters.scanErrors++
		a.last.ok = false
	} else {
		a.last = f
	}
	a.finished = time.Now()
	a.mu.Unlock()
	if err != nil {
		a.log.Error("scan failed", "err", err)
	}
}

func (a *Agent) do(f func() error) error {
	if a.Do != nil {
		return a.Do(f)
	}
	return f()
}

// scan scans, then reaps and collects garbage when asked.
func (a *Agent) scan() (figures, error) {
	var f figures
	st, err := leakscan.OpenStoreIfExists(a.opts.StateDir, !a.opts.Reap && !a.opts.GC)
	if err != nil {
		return f, err
	}
	opts := leakscan.Options{Store: st, Recheck: a.opts.Recheck}
	if a.opts.PinDir != "" {
		opts.IgnoreMountsUnder = []string{a.opts.PinDir}
	}
	var rep *leakscan.Report
	err = a.do(func() error {
		var err error
		rep, err = leakscan.Scan(opts)
		return err
	})
	if err != nil {
		return f, err
	}
	f = figuresOf(rep)
	state := leakscan.ListState(st, "")
	f.doomed = doomed(state)
	for _, w := range rep.Warnings {
		a.log.Warn("scan warning", "warning", w)
	}
	if a.opts.Reap && st != nil && len(rep.Leaks) > 0 {
		a.reap(rep.Leaks, st)
	}
	if a.opts.GC && st != nil {
		_, _ = a.gcAll(state) // logged and counted
	}
	return f, nil
}

func figuresOf(rep *leakscan.Report) figures {
	f := figures{
		ok: true, at: rep.Time, duration: rep.DurationSeconds,
		reachable: rep.ReachableNetns, leakedNetns: rep.LeakedNetns,
		slabAvailable: rep.Slab.Available, slabEstimate: rep.Slab.Leaked, slabLower: rep.Slab.LeakedLowerBound,
		unreadable: len(rep.UnreadableProcesses), discardedFiles: len(rep.Discarded),
	}
	armed := map[int]bool{}
	for _, l := range rep.Leaks {
		if l.Owner != nil {
			f.ownedLinks++
		} else {
			f.orphanLinks++
		}
		if l.GSSProxyArmed {
			armed[l.NSID] = true
		}
	}
	f.gssArmedLeaked = len(armed)
	return f
}

// doomed counts the namespaces leakguard's records and tombstones saw
// gss-proxy arm: the kernel will never free them.
func doomed(s *leakscan.StateReport) int {
	seen := map[nsident.Identity]bool{}
	for _, e := range s.Entries {
		if e.GSSProxyArmed {
			seen[e.Netns] = true
		}
	}
	return len(seen)
}

// reap deletes the owned leaks, as `leakguardctl reap` without
// --all-orphans.
func (a *Agent) reap(leaks []leakscan.Leak, st *store.Store) {
	var res []leakscan.ReapResult
	err := a.do(func() error {
		var err error
		res, err = leakscan.Reap(leaks, leakscan.ReapOptions{Store: st})
		return err
	})
	n := 0
	for _, r := range res {
		if r.Action == leakscan.ActionDeleted {
			n++
			a.log.Info("reaped leaked host link", "hostLink", r.HostLink, "ifindex", r.Ifindex, "owner", r.Owner.String())
		}
	}
	a.mu.Lock()
	a.counters.reapedLinks += uint64(n)
	if err != nil {
		a.counters.reapErrors++
	}
	a.mu.Unlock()
	if err != nil {
		a.log.Error("reap failed", "err", err)
	}
}

// GCNow runs leakguard's GC (see gcNetwork) for every network that has
// records or tombstones in StateDir, and returns how many attachments it
// reaped (`leakguardctl gc`).
func (a *Agent) GCNow() (int, error) {
	st, err := leakscan.OpenStoreIfExists(a.opts.StateDir, false)
	if err != nil || st == nil {
		return 0, err
	}
	return a.gcAll(leakscan.ListState(st, ""))
}

// gcAll runs GC for every network that has records or tombstones.
func (a *Agent) gcAll(s *leakscan.StateReport) (int, error) {
	nets := map[string]bool{}
	for _, e := range s.Entries {
		nets[e.Network] = true
	}
	var errs []error
	total := 0
	for n := range nets {
		reaped, err := a.gcNetwork(n)
		total += reaped
		if err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", n, err))
		}
	}
	err := errors.Join(errs...)
	a.mu.Lock()
	a.counters.reapedGC += uint64(total)
	if err != nil {
		a.counters.gcErrors++
	}
	a.mu.Unlock()
	if err != nil {
		a.log.Error("GC failed", "err", err)
	}
	return total, err
}
