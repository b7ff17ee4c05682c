package nri_test

import (
	"context"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/hook/nri"
	"github.com/leakguard/leakguard/test/nritest"
)

// plugin runs an external leakguard-nri in-process against sock.
type plugin struct {
	p    *nri.Plugin
	log  *nritest.Log
	done chan error
	stop context.CancelFunc
}

func startPlugin(t *testing.T, sock string, s nri.Settings) *plugin {
	t.Helper()
	lb := &nritest.Log{}
	if s.LogLevel == "" {
		s.LogLevel = "debug"
	}
	p, err := nri.New(nri.Options{
		Settings: s, Socket: sock, Idx: "10", Name: "leakguard-nri", Stderr: lb,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("nri.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pl := &plugin{p: p, log: lb, done: make(chan error, 1), stop: cancel}
	go func() { pl.done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-pl.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
		if t.Failed() {
			t.Logf("plugin log:\n%s", lb.String())
		}
	})
	return pl
}

// waitFor polls cond every 10ms.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
