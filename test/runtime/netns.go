package runtime

import (
	"bufio"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leakguard/leakguard/test/nsutil"
)

// NetnsHolder keeps a pod netns alive the way the auth_rpcgss bug does: a
// socket created inside it (test/cmd/leaksim) and nothing else, no path, no
// process inside, no nsfs fd. Once the runtime has removed its path and
// killed the pod, from userspace the netns is indistinguishable from a
// kernel-leaked one.
type NetnsHolder struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// HoldNetns starts leaksim on the netns at path (a bind mount or
// /proc/<pid>/ns/net) and waits until it holds it. The netns is released when
// the test ends.
func HoldNetns(t testing.TB, tools Tools, path string) *NetnsHolder {
	t.Helper()
	cmd := exec.Command(tools.TestBinary("leaksim"), path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start leaksim: %v", err)
	}
	h := &NetnsHolder{cmd: cmd, done: make(chan struct{})}
	pinned := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		pinned <- strings.TrimSpace(line) == "pinned"
	}()
	go func() {
		_ = cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(h.Release)
	select {
	case ok := <-pinned:
		if !ok {
			h.Release()
			t.Fatalf("leaksim %s did not pin the netns: %s", path, stderr.String())
		}
	case <-time.After(10 * time.Second):
		h.Release()
		t.Fatalf("leaksim %s: no answer in 10s: %s", path, stderr.String())
	}
	return h
}

// Release drops the last reference: the kernel frees the netns and with it
// the pod end of the veth (and so its host end).
func (h *NetnsHolder) Release() {
	select {
	case <-h.done:
		return
	default:
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
}

// RemoveNetnsPath does to a runtime's netns bind mount what the runtime
// does at teardown: unmount and remove it. A netns held by a NetnsHolder
// lives on, unreachable by path.
func RemoveNetnsPath(path string) error {
	if err := nsutil.RemovePath(path); err != nil {
		return fmt.Errorf("remove netns path: %w", err)
	}
	return nil
}
