package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/leakguard/leakguard/pkg/hook/nristate"
	"github.com/leakguard/leakguard/pkg/install"
	"github.com/leakguard/leakguard/pkg/install/ondelete"
	"github.com/leakguard/leakguard/pkg/scan/agent"
	"github.com/leakguard/leakguard/pkg/scan/report"
)

func serve(args []string, _, stderr io.Writer) error {
	var (
		c          common
		f          installFlags
		listen     string
		interval   time.Duration
		reapMode   string
		gc         bool
		withInst   bool
		readyChain bool
		nriState   string
		onDelete   bool
		saDir      string
		stopWithin time.Duration
	)
	fs := newFlags("serve", stderr, &c)
	scanFlags(fs, &c)
	f.register(fs, true)
	fs.StringVar(&listen, "listen", agent.DefaultListen, "HOST:PORT of /metrics, /healthz and /readyz (numeric port; empty host: every address)")
	fs.DurationVar(&interval, "interval", agent.DefaultInterval, "time between scans")
	fs.StringVar(&reapMode, "reap", "", `"owned": after each scan, delete the leaked host links a leakguard record or tombstone owns (as leakguardctl reap)`)
	fs.BoolVar(&gc, "gc", false, "after each scan, run leakguard's GC: reap records whose netns is provably orphaned, drop finished tombstones")
	fs.BoolVar(&withInst, "install", false, "also run `install --watch` in this process, with the install flags (--cni-conf-dir, --plugin-config, ...); /readyz then waits for the chain")
	fs.BoolVar(&readyChain, "ready-needs-chain", false, "without --install: /readyz waits until the config runtimes load in --cni-conf-dir runs leakguard")
	fs.StringVar(&nriState, "nri-state", nristate.DefaultPath, `leakguard-nri's state file, for leakguard_nri_connected ("" to ignore)`)
	fs.BoolVar(&onDelete, "uninstall-on-delete", false, "with --install: on SIGTERM, ask the API server whether this pod's DaemonSet is gone or being deleted, and only then uninstall (entry, leakguard, then the hook and leakguard-nri once leakguard-nri is disconnected); otherwise, or when the API cannot tell, keep everything")
	fs.StringVar(&saDir, "serviceaccount-dir", ondelete.DefaultServiceAccountDir, "with --uninstall-on-delete: the dir holding the service account's token and ca.crt")
	fs.DurationVar(&stopWithin, "uninstall-timeout", ondelete.DefaultTimeout, "with --uninstall-on-delete: bound on the decision and the uninstall (keep it well below terminationGracePeriodSeconds)")
	if err := parse(fs, args); err != nil {
		return helpOK(err)
	}
	if onDelete && !withInst {
		fmt.Fprintln(stderr, "serve: --uninstall-on-delete needs --install (it uninstalls what that installs)")
		return errUsage
	}
	if stopWithin <= 0 {
		fmt.Fprintf(stderr, "serve: --uninstall-timeout %v: must be positive\n", stopWithin)
		return errUsage
	}
	if onDelete && f.drain >= stopWithin {
		fmt.Fprintf(stderr, "serve: --drain %v must be shorter than --uninstall-timeout %v (or the binaries always stay)\n", f.drain, stopWithin)
		return errUsage
	}
	if c.json {
		fmt.Fprintln(stderr, "serve: --json does not apply")
		return errUsage
	}
	if reapMode != "" && reapMode != "owned" {
		fmt.Fprintf(stderr, "serve: --reap %q: only \"owned\" (orphans are for an operator to judge: leakguardctl reap --all-orphans)\n", reapMode)
		return errUsage
	}
	if err := checkListen(listen); err != nil {
		fmt.Fprintf(stderr, "serve: --listen %q: %v\n", listen, err)
		return errUsage
	}
	if interval < time.Second {
		fmt.Fprintf(stderr, "serve: --interval %v: at least 1s\n", interval)
		return errUsage
	}
	level, err := parseLevel(f.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "serve: --log-level: %v\n", err)
		return errUsage
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	opts := agent.Options{
		StateDir: c.stateDir, PinDir: c.pinDir, Interval: interval, Recheck: c.recheck,
		Reap: reapMode == "owned", GC: gc,
		ConfDir: f.confDir, BinDir: f.binDir, ReadyNeedsChain: readyChain || withInst,
		NRIState: nriState, Log: log.With("component", "agent"), Stderr: stderr,
	}
	if c.recheck == 0 {
		opts.Recheck = -1
	}
	var in *install.Installer
	if withInst {
		if in, err = f.installer("serve", stderr); err != nil {
			return err
		}
		opts.Installer = in
		// The records are where the inserted entry says, unless told.
		set := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
		if e, _ := install.ParseEntry(f.pluginConfig); e.Config() != nil {
			if !set["state-dir"] {
				opts.StateDir = e.Config().StateDir
			}
			if !set["pin-dir"] {
				opts.PinDir = e.Config().PinDir
			}
		}
	}
	if in != nil {
		// Before the first scan, which would refuse a fresh hostPath dir;
		// a failure is the installer's to report and retry.
		_ = in.AdoptStateDir()
	}
	a := agent.New(opts)

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signalContext()
	defer stop()
	// Follows the DaemonSet from now on, while the service account works
	// (delete -k removes it before the SIGTERM: see ondelete.Watcher).
	var watcher *ondelete.Watcher
	stopWatcher := func() {}
	if onDelete {
		if cfg, err := ondelete.ConfigFromEnv(os.Getenv, saDir); err == nil {
			wctx, cancel := context.WithCancel(context.Background())
			watcher, stopWatcher = ondelete.StartWatcher(wctx, cfg, log.With("component", "uninstall-on-delete")), cancel
		}
	}
	errc := make(chan error, 3)
	watched := make(chan struct{})
	go func() { errc <- srv.Serve(ln) }()
	go func() { errc <- a.Run(ctx) }()
	if in != nil {
		go func() { defer close(watched); errc <- in.Watch(ctx) }()
	} else {
		close(watched)
	}
	log.Info("serving", "listen", ln.Addr().String(), "interval", interval.String(), "reap", reapMode, "gc", gc, "install", withInst)
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			stop()
			srv.Close()
			return fmt.Errorf("serve: %w", err)
		}
	}
	<-watched // a watch still running would put the entry back
	if onDelete {
		ondelete.Stop(context.Background(), ondelete.Options{
			Installer: in, ServiceAccountDir: saDir, NRIState: nriState, Timeout: stopWithin,
			Log: log.With("component", "uninstall-on-delete"), Watcher: watcher,
		})
	}
	if watcher != nil {
		stopWatcher()
		<-watcher.Done()
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	if in != nil && !onDelete {
		fmt.Fprintln(stderr, "leakguardctl serve: stopped; leakguard stays installed (run uninstall to remove it)")
	}
	return nil
}

// gcCmd runs leakguard's GC once for every network with records: what
// `serve --gc` does after each scan.
func gcCmd(args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlags("gc", stderr, &c)
	fs.StringVar(&c.pinDir, "pin-dir", "", "leakguard's netns pin dir (default <state-dir>/netns)")
	if err := parse(fs, args); err != nil {
		return helpOK(err)
	}
	a := agent.New(agent.Options{StateDir: c.stateDir, PinDir: c.pinDir, Stderr: stderr})
	n, err := a.GCNow()
	if c.json {
		out := struct {
			Reaped int      `json:"reaped"`
			Errors []string `json:"errors,omitempty"`
		}{Reaped: n}
		if err != nil {
			out.Errors = []string{err.Error()}
		}
		if jerr := report.JSON(stdout, out); jerr != nil {
			return jerr
		}
		return err
	}
	fmt.Fprintf(stdout, "GC reaped %d stale attachment(s)\n", n)
	return err
}

// checkListen accepts host:port with a numeric port 1-65535 (host empty for
// every address): Prometheus and the probes scrape a known port, so an empty
// value (an unset variable in the DaemonSet's args) or port 0 must not
// start a server on a random one, and a service name is not looked up.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("port %q: want a number from 1 to 65535", port)
	}
	return nil
}
