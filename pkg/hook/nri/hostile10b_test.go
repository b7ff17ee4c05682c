package nri_test

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"

	"github.com/leakguard/leakguard/pkg/hook/nri"
	"github.com/leakguard/leakguard/test/nritest"
)

// A runtime that sends Configure and drops the connection at once (killed
// right after): the stub's own Configure handler is running when the
// plugin sees the connection lost. Abandoning that registration must not
// call the stub's Configure a second time beside it (both write the stub's
// fields: a data race, and two answers for Start's one), nor leave
// goroutines behind.
func TestRuntimeGoneDuringConfigure(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nri.sock")
	raw := nritest.ListenRaw(t, sock, true)
	startPlugin(t, sock, nri.Settings{HookPath: nritest.FakeHook(t)})
	for i := 0; i < 20; i++ {
		c := nextConn(t, raw)
		done := make(chan struct{})
		go func() {
			defer close(done)
			ctx, cancel := context.WithTimeout(context.Background(), nriTimeout)
			defer cancel()
			_, _ = c.Plugin.Configure(ctx, &api.ConfigureRequest{RuntimeName: "hostile", RuntimeVersion: "v1",
				RegistrationTimeout: 5000, RequestTimeout: 2000})
		}()
		if i%2 == 0 {
			<-done // answered, then gone at once
		} else {
			time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
		}
		c.Close()
	}
	c := nextConn(t, raw) // the last, still registering, is live
	defer c.Close()
	time.Sleep(2500 * time.Millisecond)
	buf := make([]byte, 1<<22)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if n := strings.Count(stacks, "stub.(*stub).Start("); n > 1 {
		t.Fatalf("%d goroutines stuck in the NRI stub's Start; want at most the live one", n)
	}
	if n := strings.Count(stacks, "stub.(*stub).Configure("); n > 0 {
		t.Fatalf("%d goroutines stuck in the NRI stub's Configure:\n%s", n, stacks)
	}
}
