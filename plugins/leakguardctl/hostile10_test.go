package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
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
