// Package stress drives the real leakguard binary after the real bridge and
// host-local plugins (through cnitool, and by exec'ing leakguard directly)
// under concurrency and SIGKILL, inside throw-away netns that play the node,
// and checks that every DEL leaves a clean node: no host veth of the pod, no
// record, lock, temp file or pin mount, no IP left allocated, and no node
// link deleted that was not the pod's.
//
// Plain `go test` (and so `make test`) runs the short form; `make stress`
// sets LEAKGUARD_STRESS=full for the full numbers. Each scenario prints its
// counts on stdout (lines starting with "stress:") and with t.Logf.
package stress

import (
	"fmt"
	"os"
	"testing"

	"github.com/leakguard/leakguard/test/cnitest"
)

// sizes are the numbers a run uses.
type sizes struct {
	name string
	// pods is the number of concurrent ADD then DEL per scenario.
	pods int
	// dels is the number of concurrent DELs of one attachment.
	dels int
	// rounds is the number of SIGKILL rounds (ADD and DEL each killed at a
	// random point).
	rounds int
}

var (
	tools cnitest.Tools
	size  sizes
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	switch v := os.Getenv("LEAKGUARD_STRESS"); v {
	case "", "short":
		size = sizes{name: "short", pods: 16, dels: 8, rounds: 20}
	case "full":
		size = sizes{name: "full", pods: 64, dels: 8, rounds: 200}
	default:
		fmt.Fprintf(os.Stderr, "test/stress: LEAKGUARD_STRESS=%q: want short or full\n", v)
		return 1
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "test/stress: must run as root (it creates network namespaces, links and mounts); run `sudo make test`")
		return 1
	}
	scratch, err := os.MkdirTemp("", "leakguard-stress-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/stress:", err)
		return 1
	}
	defer os.RemoveAll(scratch)
	if tools, err = cnitest.FindTools(scratch); err != nil {
		fmt.Fprintln(os.Stderr, "test/stress:", err)
		return 1
	}
	return m.Run()
}

// report prints one line of counts on stdout and in the test log.
func report(t *testing.T, format string, a ...any) {
	t.Helper()
	line := fmt.Sprintf("stress: %s: "+format, append([]any{t.Name()}, a...)...)
	t.Log(line)
	fmt.Println(line)
}
