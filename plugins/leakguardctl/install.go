package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/leakguard/leakguard/pkg/install"
)

// installFlags are the flags of install, uninstall and serve --install.
type installFlags struct {
	confDir, binDir, from, primary string
	ownFile                        bool
	ownFileName                    string
	pluginConfig                   string
	hookDir, nriDir, nriName       string
	hookPolicy                     string
	resync, revertInterval, drain  time.Duration
	revertBurst                    int
	logLevel                       string
}

// register adds the flags; full is false for uninstall, which needs only
// where things are.
func (f *installFlags) register(fs *flag.FlagSet, full bool) {
	fs.StringVar(&f.confDir, "cni-conf-dir", install.DefaultConfDir, "the runtime's CNI conf dir")
	fs.StringVar(&f.binDir, "cni-bin-dir", install.DefaultBinDir, "the runtime's CNI bin dir (leakguard goes there)")
	fs.StringVar(&f.hookDir, "hook-dir", "", "also install (uninstall: remove) leakguard-hook in this dir")
	fs.StringVar(&f.hookPolicy, "hook-policy", "", "with --hook-dir, also install this hook policy file there as "+install.HookPolicyFile+" (leakguard-nri --hook-config)")
	fs.StringVar(&f.nriDir, "nri-dir", "", "also install (uninstall: remove) leakguard-nri in this dir (containerd's NRI plugin_path)")
	fs.StringVar(&f.nriName, "nri-name", install.NRIBinary, "file name of leakguard-nri in --nri-dir (a pre-installed NRI plugin is NN-name, e.g. 10-leakguard-nri)")
	fs.StringVar(&f.ownFileName, "own-file-name", install.DefaultOwnFile, "name of leakguard's own config file (must sort before the primary)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&f.drain, "drain", install.DefaultDrain, "uninstall: wait this long between removing the entry and removing leakguard's binary (a DEL in flight may still run it)")
	if !full {
		return
	}
	fs.StringVar(&f.from, "from", "", "dir holding the binaries to install (default: the dir of leakguardctl)")
	fs.StringVar(&f.primary, "primary", "", "the primary network's config file name (default: the first one runtimes load)")
	fs.BoolVar(&f.ownFile, "own-file", false, "do not edit the primary: keep leakguard's own copy of it (--own-file-name) in sync, with leakguard appended")
	fs.StringVar(&f.pluginConfig, "plugin-config", "", `leakguard's settings for its entry, a JSON object of its own keys (e.g. {"logFile":"/var/log/leakguard.log"})`)
	fs.DurationVar(&f.resync, "resync", install.DefaultResync, "backstop re-check interval of --watch")
	fs.IntVar(&f.revertBurst, "revert-burst", install.DefaultRevertBurst, "re-insertions into one file allowed at once before the rate limit")
	fs.DurationVar(&f.revertInterval, "revert-interval", install.DefaultRevertInterval, "one re-insertion per interval past the burst")
}

// options turns the flags into install.Options; a bad value is a usage
// error (exit 2) with the reason on stderr.
func (f *installFlags) options(name string, stderr io.Writer) (install.Options, error) {
	level, err := parseLevel(f.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "%s: --log-level: %v\n", name, err)
		return install.Options{}, errUsage
	}
	entry, err := install.ParseEntry(f.pluginConfig)
	if err != nil {
		fmt.Fprintf(stderr, "%s: --plugin-config: %v\n", name, err)
		return install.Options{}, errUsage
	}
	from := f.from
	if from == "" {
		exe, err := os.Executable()
		if err != nil {
			return install.Options{}, fmt.Errorf("find leakguardctl's dir (use --from): %w", err)
		}
		from = filepath.Dir(exe)
	}
	opts := install.Options{
		ConfDir: f.confDir, BinDir: f.binDir, From: from, Primary: f.primary, Entry: entry,
		HookDir: f.hookDir, NRIDir: f.nriDir, NRIName: f.nriName, HookPolicy: f.hookPolicy,
		Resync: f.resync, RevertBurst: f.revertBurst, RevertInterval: f.revertInterval, Drain: f.drain,
		Log: slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})).With("component", "install"),
	}
	if f.ownFile {
		opts.OwnFile = f.ownFileName
	}
	return opts, nil
}

func (f *installFlags) installer(name string, stderr io.Writer) (*install.Installer, error) {
	opts, err := f.options(name, stderr)
	if err != nil {
		return nil, err
	}
	in, err := install.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, errUsage
	}
	return in, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("%q: want debug, info, warn or error", s)
	}
	return l, nil
}

// signalContext is done on SIGTERM or SIGINT.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

func installCmd(args []string, stdout, stderr io.Writer) error {
	var f installFlags
	var watch bool
	var timeout time.Duration
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.register(fs, true)
	fs.BoolVar(&watch, "watch", false, "keep leakguard in the chain until SIGTERM: re-insert it whenever the primary's file is rewritten")
	fs.DurationVar(&timeout, "timeout", 0, "without --watch, give up after this long waiting for the dirs and a primary (0: wait)")
	if err := parse(fs, args); err != nil {
		return helpOK(err)
	}
	in, err := f.installer("install", stderr)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	if !watch {
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		if err := in.Install(ctx); err != nil {
			return fmt.Errorf("not installed: %s", in.Status().Err)
		}
		st := in.Status()
		fmt.Fprintf(stdout, "leakguard is in the chain: %s (primary %s)\n", st.File, st.Primary)
		return nil
	}
	_ = in.Watch(ctx) // returns when a signal arrives
	// Binaries and entry stay: a restart or an upgrade must not leave pods
	// set up without leakguard or torn down without its binary.
	fmt.Fprintln(stderr, "leakguardctl install: stopped; leakguard stays installed (run uninstall to remove it)")
	return nil
}

func uninstallCmd(args []string, stdout, stderr io.Writer) error {
	var f installFlags
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.register(fs, false)
	if err := parse(fs, args); err != nil {
		return helpOK(err)
	}
	f.from = "/" // nothing is copied
	in, err := f.installer("uninstall", stderr)
	if err != nil {
		return err
	}
	rep, err := in.Uninstall(f.ownFileName)
	for _, e := range rep.Edited {
		fmt.Fprintf(stdout, "removed leakguard's entry from %s\n", filepath.Join(f.confDir, e))
	}
	for _, r := range rep.Removed {
		fmt.Fprintf(stdout, "removed %s\n", filepath.Join(f.confDir, r))
	}
	for _, b := range rep.Binaries {
		fmt.Fprintf(stdout, "removed %s\n", b)
	}
	return err
}
