package kube

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// daemon is one control-plane or node process, its output in a log file.
type daemon struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, once done is closed
}

func startDaemon(name, logPath string, argv, env []string) (*daemon, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a ^C to the test does not hit it first, the
	// harness stops it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the daemon's process group, then SIGKILL after grace.
func (d *daemon) stop(grace time.Duration) error {
	if d.exited() {
		return nil
	}
	pgid := -d.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	select {
	case <-d.done:
		return fmt.Errorf("%s did not stop within %v of SIGTERM: killed", d.name, grace)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survives SIGKILL", d.name, d.cmd.Process.Pid)
	}
}

// tail returns the last n lines of the daemon's log.
func (d *daemon) tail(n int) string {
	b, err := os.ReadFile(d.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitUntil polls ready until it succeeds, the daemon exits or timeout.
func (d *daemon) waitUntil(timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if d.exited() {
			return fmt.Errorf("%s exited (%v) before it was ready: %w\n%s", d.name, d.err, err, d.tail(30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %w\n%s", d.name, timeout, err, d.tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
