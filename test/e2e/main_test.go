// Package e2e drives the example chains of conf/ end to end: the real
// cnitool, the real reference plugins (bridge, ptp, host-local), the
// tke-eni-style test plugin and leakguard, all inside a throw-away netns that
// plays the node, through a normal lifecycle and through the auth_rpcgss
// netns leak.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/leakguard/leakguard/test/cnitest"
)

var tools cnitest.Tools

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "test/e2e: must run as root (it creates network namespaces and links); run `sudo make test`")
		return 1
	}
	scratch, err := os.MkdirTemp("", "leakguard-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/e2e:", err)
		return 1
	}
	defer os.RemoveAll(scratch)
	if tools, err = cnitest.FindTools(scratch); err != nil {
		fmt.Fprintln(os.Stderr, "test/e2e:", err)
		return 1
	}
	return m.Run()
}
