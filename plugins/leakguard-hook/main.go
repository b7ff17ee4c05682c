// leakguard-hook is an OCI createRuntime/prestart hook: before a privileged
// container starts, it turns kernel_nfsd off in the gssproxy config inside the
// container's rootfs, so gssproxy never pins the pod's network namespace.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/leakguard/leakguard/pkg/hook/hookpolicy"
	"github.com/leakguard/leakguard/pkg/hook/protect"
	"github.com/leakguard/leakguard/pkg/logging"
)

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stderr)) }

// run returns the exit code. Only flag errors (2) and an internal error under
// a policy file read successfully with failClosed: true (1) are non-zero; a
// policy file that cannot be used is reported and the default policy applies.
func run(args []string, stdin io.Reader, stderr io.Writer) int {
	fs := flag.NewFlagSet("leakguard-hook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "policy file (default "+hookpolicy.DefaultPath+" if it exists)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2 // usage error in the hook's own command line
	}
	policy, policyErr := hookpolicy.LoadOrDefault(*config)
	if policyErr != nil {
		fmt.Fprintf(stderr, "leakguard-hook: %v; using the default policy (mode %s, fail-open)\n", policyErr, policy.Mode)
	}
	logw := openLog(policy.LogFile, stderr)
	defer logw.Close()

	res := protect.Run(stdin, policy)
	res.PolicyErr = policyErr
	res.Log(slog.New(slog.NewJSONHandler(logw, nil)))
	if res.Err != nil && policy.FailClosed {
		fmt.Fprintf(stderr, "leakguard-hook: container %q not protected: %v (policy failClosed: failing the hook)\n", res.ID, res.Err)
		return 1
	}
	return 0
}

// openLog opens the policy's log file for appending, or falls back to
// stderr. A log file that cannot be used (missing directory, a symlink, a
// FIFO, ...: see logging.OpenFile) is reported on stderr and the line goes
// there: the hook never blocks or fails a container over its own log.
func openLog(path string, stderr io.Writer) io.WriteCloser {
	if path == "" {
		return nopCloser{stderr}
	}
	f, err := logging.OpenFile(path, 0o640)
	if err != nil {
		fmt.Fprintf(stderr, "leakguard-hook: cannot open log file %s: %v; logging to stderr\n", path, err)
		return nopCloser{stderr}
	}
	return f
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
