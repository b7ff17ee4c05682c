package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/leakguard/leakguard/test/nsutil"
)

// TestDelLogFileHostile: DEL through the binary with a logFile that is a
// FIFO nobody reads, a symlink to a file elsewhere, or a directory. DEL
// used to block forever opening the FIFO (before it even took its lock):
// now each is refused with the reason on stderr, DEL succeeds within its
// deadline, and nothing is written through the symlink.
func TestDelLogFileHostile(t *testing.T) {
	node := nsutil.NewNS(t)
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, []byte("keep\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := map[string]func(p string) error{
		"fifo":    func(p string) error { return syscall.Mkfifo(p, 0o600) },
		"symlink": func(p string) error { return os.Symlink(outside, p) },
		"dir":     func(p string) error { return os.Mkdir(p, 0o700) },
	}
	for name, mk := range logs {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			logFile := filepath.Join(dir, "lg.log")
			if err := mk(logFile); err != nil {
				t.Fatal(err)
			}
			conf, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "bin-test", "type": "leakguard",
				"stateDir": filepath.Join(dir, "state"), "logFile": logFile})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stderr bytes.Buffer
			c := exec.CommandContext(ctx, pluginBin)
			c.Env = []string{"CNI_COMMAND=DEL", "CNI_CONTAINERID=c-logfile", "CNI_NETNS=", "CNI_IFNAME=eth0", "CNI_PATH=/nonexistent"}
			c.Stdin, c.Stderr = bytes.NewReader(conf), &stderr
			err := node.Do(func(ns.NetNS) error { return c.Run() })
			if ctx.Err() != nil {
				t.Fatalf("DEL blocked on its log file (killed after 10 s): %s", stderr.String())
			}
			if err != nil || !strings.Contains(stderr.String(), "cannot open log file "+logFile) {
				t.Fatalf("DEL: %v, stderr %q", err, stderr.String())
			}
			if b, _ := os.ReadFile(outside); string(b) != "keep\n" {
				t.Fatalf("written through the symlink: %q", b)
			}
		})
	}
}
