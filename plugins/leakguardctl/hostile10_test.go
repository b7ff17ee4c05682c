package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// --listen must name the port Prometheus and the probes use: an empty
// value (an unset env var in the DaemonSet's args), port 0 (a random port)
// or anything that is not host:port with a numeric port is a usage error
// (exit 2 naming --listen), never a server on a port nobody scrapes.
func TestServeListenUsageErrors(t *testing.T) {
	for _, l := range []string{"", ":0", "9787", ":99999", "127.0.0.1:http", "unix:/tmp/x", "[::1", "127.0.0.1:97x"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, binary, "serve", "--nri-state", "", "--state-dir", t.TempDir(), "--listen", l)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		timedOut := ctx.Err() != nil
		cancel()
		var ee *exec.ExitError
		code := -1
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if timedOut {
			t.Errorf("serve --listen %q: still serving after 10s\n%s", l, stderr.String())
			continue
		}
		if code != 2 || !strings.Contains(stderr.String(), "--listen") {
			t.Errorf("serve --listen %q: exit %d, stderr %q; want 2 naming --listen", l, code, stderr.String())
		}
	}
}

// serve --install on a fresh node: the state dir is the empty 0755 dir a
// hostPath volume creates, which the installer makes private. The agent's
// first scan must not race that and fail (leakguard_scan_errors_total 1
// and an ERROR on every new node, scan_success 0 for a whole interval).
func TestServeInstallFirstScanSeesAdoptedStateDir(t *testing.T) {
	for round := 0; round < 10; round++ {
		n := newConfNode(t)
		state := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(state, 0o755); err != nil {
			t.Fatal(err)
		}
		addr := freePort(t)
		cmd, stderr := start(t, n.dirs("serve", "--install", "--listen", addr, "--interval", "1m",
			"--plugin-config", `{"stateDir":"`+state+`"}`, "--nri-state", "")...)
		var metrics string
		waitUntil(t, "the first scan", func() bool {
			_, metrics = httpGet("http://" + addr + "/metrics")
			return strings.Contains(metrics, "leakguard_scans_total 1")
		})
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if !strings.Contains(metrics, "leakguard_scan_errors_total 0") {
			t.Fatalf("round %d: the first scan failed:\n%s", round, stderr)
		}
	}
}
