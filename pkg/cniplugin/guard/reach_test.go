package guard_test

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/cniplugin/guard"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

// A netns the walk saw that vanishes before its nsid is read (a process
// elsewhere on the node exiting: pods come and go) must not leave every nsid
// unknown: the production view walks again, as the scan's re-check does.
// Otherwise a DEL without a record leaves a leaked pod's host veth alone
// (found by test/stress: ADD killed before saving, netns leaked).
func TestNSIDReachableSurvivesAVanishedNetns(t *testing.T) {
	self, err := nsident.OfPath("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	// A netns reached by one process only.
	holder := exec.Command("unshare", "--net", "sleep", "infinity")
	if err := holder.Start(); err != nil {
		t.Fatalf("start unshare: %v", err)
	}
	defer func() { _ = holder.Process.Kill(); _ = holder.Wait() }()
	nsPath := "/proc/" + strconv.Itoa(holder.Process.Pid) + "/ns/net"
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if id, err := nsident.OfPath(nsPath); err == nil && id != self {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare did not enter a new netns")
		}
	}

	reach, err := guard.New(io.Discard).Reach(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = holder.Wait()
	if _, err := os.Stat(nsPath); !os.IsNotExist(err) {
		t.Fatalf("holder's netns path still there: %v", err)
	}

	// No netns of this host has nsid 1<<30: unreachable, and provably so.
	ok, err := reach.NSIDReachable(1 << 30)
	if err != nil || ok {
		t.Fatalf("NSIDReachable after a walked netns vanished = %v, %v; want false, nil", ok, err)
	}
}
