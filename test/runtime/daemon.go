package runtime

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Daemon is one long-running process a test harness started (containerd,
// dockerd, cri-dockerd; test/kube's control plane and kubelet), its output
// in a log file.
type Daemon struct {
	// StopGroup makes Stop signal the daemon's whole process group (it is
	// started as its leader), for daemons whose children must go with it.
	StopGroup bool

	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// StartDaemon starts argv with env, stdout and stderr appended to logPath.
func StartDaemon(name, logPath string, argv, env []string) (*Daemon, error) {
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
	d := &Daemon{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// PID is the daemon's process ID.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Name is the name it was started under.
func (d *Daemon) Name() string { return d.name }

// Err is Wait's result once it exited (nil before).
func (d *Daemon) Err() error {
	if !d.Exited() {
		return nil
	}
	return d.err
}

// Exited tells whether the process has exited.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, then SIGKILL after grace (to the process group
// with StopGroup).
func (d *Daemon) Stop(grace time.Duration) error {
	if d.Exited() {
		return nil
	}
	d.signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(grace):
	}
	d.signal(syscall.SIGKILL)
	select {
	case <-d.done:
		return fmt.Errorf("%s did not stop within %v of SIGTERM: killed", d.name, grace)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survives SIGKILL", d.name, d.PID())
	}
}

// Tail returns the last n lines of the daemon's log.
func (d *Daemon) Tail(n int) string {
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

// WaitUntil polls ready until it succeeds, the daemon exits or timeout.
func (d *Daemon) WaitUntil(timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if d.Exited() {
			return fmt.Errorf("%s exited (%v) before it was ready: %w\n%s", d.name, d.err, err, d.Tail(30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %w\n%s", d.name, timeout, err, d.Tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *Daemon) signal(sig syscall.Signal) {
	if d.StopGroup {
		_ = syscall.Kill(-d.PID(), sig)
		return
	}
	_ = d.cmd.Process.Signal(sig)
}
