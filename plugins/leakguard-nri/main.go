// Command leakguard-nri is an NRI plugin for containerd and CRI-O: it adds
// leakguard-hook as a createRuntime hook to every container, and the hook
// turns gssproxy's kernel_nfsd off inside the privileged ones.
//
// Two ways to run it:
//
//   - pre-installed: the runtime starts <plugin_path>/NN-leakguard-nri with
//     no arguments and a connected socket (NRI_PLUGIN_SOCKET, NRI_PLUGIN_IDX,
//     NRI_PLUGIN_NAME); settings come from its drop-in config
//     <plugin_config_path>/NN-leakguard-nri.conf (JSON: hookPath, hookConfig,
//     logFile, logLevel). It exits when the runtime closes the connection.
//   - external: started by the operator (systemd, a DaemonSet), it dials
//     --socket and reconnects with back-off whenever the runtime restarts.
//
// SIGUSR1 logs the counters and the CreateContainer latency; SIGINT and
// SIGTERM stop it (exit 0). Exit codes: 0 stopped, 1 error, 2 usage or
// configuration (bad flag, index, name, hook binary).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"

	"github.com/leakguard/leakguard/pkg/hook/nri"
	"github.com/leakguard/leakguard/pkg/hook/nristate"
)

func main() { os.Exit(run(os.Args[1:], os.Getenv, os.Stderr)) }

func run(args []string, getenv func(string) string, stderr io.Writer) int {
	opts, err := parse(args, getenv, stderr)
	var fe flagError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &fe):
		return 2 // the flag package printed the error and the usage
	case err != nil:
		fmt.Fprintf(stderr, "leakguard-nri: %v\n", err)
		return 2
	}
	p, err := nri.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "leakguard-nri: %v\n", err)
		return 2
	}
	nrilog.Set(p.StubLogger()) // the NRI library's own messages, into our log

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			p.LogStats("leakguard-nri stats")
		}
	}()

	err = p.Run(ctx)
	var ce *nri.ConfigError
	switch {
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "leakguard-nri: %v\n", err)
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "leakguard-nri: %v\n", err)
		return 1
	}
	return 0
}

// flagError is an error the flag package has already reported.
type flagError struct{ error }

// parse reads the command line; the environment tells whether the runtime
// started this process (pre-installed) and then owns index and name.
func parse(args []string, getenv func(string) string, stderr io.Writer) (nri.Options, error) {
	o := nri.Options{Stderr: stderr}
	fs := flag.NewFlagSet("leakguard-nri", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Socket, "socket", nri.DefaultSocket, "NRI socket of the runtime (external plugin)")
	fs.StringVar(&o.HookPath, "hook-path", nri.DefaultHookPath, "leakguard-hook binary the runtime runs as createRuntime hook")
	fs.StringVar(&o.HookConfig, "hook-config", "", "hook policy file passed to the hook as --config (default: the hook's own)")
	fs.StringVar(&o.Idx, "idx", nri.DefaultIdx, "plugin index, two digits (external plugin)")
	fs.StringVar(&o.Name, "name", nri.DefaultName, "plugin name, [a-zA-Z0-9_.+-] (external plugin)")
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.LogFile, "log-file", "", "append JSON log lines to this file instead of stderr")
	fs.BoolVar(&o.WaitForHook, "wait-for-hook", false, "external plugin: wait for a --hook-path that does not exist yet (installed by another container) instead of exiting 2")
	fs.StringVar(&o.StateFile, "state-file", "", "report the connection state here for leakguardctl serve (its default path: "+nristate.DefaultPath+"; empty: none)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, flagError{err}
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	sock, idx, name := getenv(api.PluginSocketEnvVar), getenv(api.PluginIdxEnvVar), getenv(api.PluginNameEnvVar)
	if sock == "" {
		if idx != "" || name != "" {
			return o, fmt.Errorf("%s or %s is set without %s: not started by the runtime, unset them",
				api.PluginIdxEnvVar, api.PluginNameEnvVar, api.PluginSocketEnvVar)
		}
		return o, nil
	}
	o.Preinstalled, o.Idx, o.Name = true, idx, name
	for _, f := range []string{"socket", "idx", "name"} {
		if set[f] {
			return o, fmt.Errorf("--%s cannot be used when the runtime starts the plugin (%s is set): the runtime gives the connection, index and name", f, api.PluginSocketEnvVar)
		}
	}
	if err := api.CheckPluginIndex(idx); err != nil {
		return o, fmt.Errorf("%s from the runtime: %w", api.PluginIdxEnvVar, err)
	}
	if err := api.CheckPluginName(name); err != nil {
		return o, fmt.Errorf("%s from the runtime: %w", api.PluginNameEnvVar, err)
	}
	return o, nil
}
