package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel reports in ru_maxrss the high-water RSS of the memory the
// process had when it called execve. Go forks with CLONE_VM, so a plugin
// exec'd straight from this (large) process would be charged our own RSS.
// Every plugin is therefore started through a freshly exec'd copy of this
// binary in launcher mode, which does nothing but exec, wait4 and report: its
// RSS (measured as "launcher floor") is the lowest peak RSS we can report.
const launcherArg = "__launch"

// sample is one plugin process: wall time from fork to reap, and peak RSS
// of the process and the children it waited for (e.g. host-local under bridge).
type sample struct {
	Wall   time.Duration `json:"wall"`
	MaxRSS int64         `json:"maxrssKiB"`
	Exit   int           `json:"exit"`
}

// launch is the launcher mode: exec argv with our stdio, report on fd 3,
// exit with the plugin's status.
func launch(argv []string) {
	report := os.NewFile(3, "report")
	unix.CloseOnExec(3)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		fmt.Fprintf(os.Stderr, "lgbench launcher: %v\n", err)
		os.Exit(127)
	}
	s := sample{Wall: wall, Exit: cmd.ProcessState.ExitCode()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		s.MaxRSS = ru.Maxrss
	}
	_ = json.NewEncoder(report).Encode(s)
	os.Exit(s.Exit)
}

// invocation is one plugin call, as a runtime (libcni) makes it.
type invocation struct {
	plugin string // path of the plugin binary
	env    []string
	stdin  []byte
}

// run execs the plugin through the launcher in the calling thread's netns
// (call it inside ns.Do of the node) and returns its stdout and sample.
func (inv invocation) run() ([]byte, sample, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, sample{}, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, sample{}, err
	}
	defer r.Close()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(self, launcherArg, inv.plugin)
	cmd.Env = inv.env
	cmd.Stdin = bytes.NewReader(inv.stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return nil, sample{}, err
	}
	var s sample
	decErr := json.NewDecoder(r).Decode(&s)
	runErr := cmd.Wait()
	if decErr != nil {
		return nil, sample{}, fmt.Errorf("launcher for %s: %v (%v) %s", inv.plugin, decErr, runErr, stderr.String())
	}
	if runErr != nil {
		return nil, s, fmt.Errorf("%s exited %d: %s %s", inv.plugin, s.Exit,
			strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), s, nil
}

// cniEnv is the environment libcni gives a plugin.
func cniEnv(command, containerID, netnsPath, cniPath string) []string {
	env := []string{
		"CNI_COMMAND=" + command,
		"CNI_CONTAINERID=" + containerID,
		"CNI_NETNS=" + netnsPath,
		"CNI_IFNAME=eth0",
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=" + containerID,
		"CNI_PATH=" + cniPath,
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CNI_") {
			env = append(env, kv)
		}
	}
	return env
}
