// Command installbench measures `leakguardctl install --watch` and
// `leakguardctl serve` in throw-away dirs (scripts/bench-install.sh runs it):
//
//	installbench -leakguardctl bin/leakguardctl [-rounds 100] [-idle 5m] [-serve 30s]
//
// It starts the installer on a conf dir holding a primary conflist, then,
// -rounds times, rewrites the primary without leakguard (alternately by
// rename and in place, as CNI agents do) and times how long the entry takes
// to come back, seen through inotify on the dir. Then it leaves the
// installer idle for -idle and reads its CPU time from /proc. Last it runs
// the agent (serve, scanning every second) for -serve and reads its RSS.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

const primary = `{
  "cniVersion": "1.0.0",
  "name": "podnet",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

func main() {
	ctl := flag.String("leakguardctl", "bin/leakguardctl", "leakguardctl binary")
	rounds := flag.Int("rounds", 100, "rewrites of the primary")
	idle := flag.Duration("idle", 5*time.Minute, "idle time over which the installer's CPU is measured")
	serveFor := flag.Duration("serve", 30*time.Second, "how long the agent runs (1 s interval) before its RSS is read")
	flag.Parse()
	if err := run(*ctl, *rounds, *idle, *serveFor); err != nil {
		fmt.Fprintf(os.Stderr, "installbench: %v\n", err)
		os.Exit(1)
	}
}

func run(ctl string, rounds int, idle, serveFor time.Duration) error {
	root, err := os.MkdirTemp("", "installbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	conf, bin, from := filepath.Join(root, "net.d"), filepath.Join(root, "bin"), filepath.Join(root, "from")
	for _, d := range []string{conf, bin, from} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(from, "leakguard"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		return err
	}
	path := filepath.Join(conf, "10-podnet.conflist")
	if err := os.WriteFile(path, []byte(primary), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(root, "install.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	// The limit on re-insertions would pace a scripted fight like this one.
	inst := exec.Command(ctl, "install", "--watch", "--cni-conf-dir", conf, "--cni-bin-dir", bin, "--from", from, "--revert-burst", "1000000")
	inst.Stdout, inst.Stderr = logf, logf
	if err := inst.Start(); err != nil {
		return err
	}
	defer func() { _ = inst.Process.Kill(); _ = inst.Wait() }()

	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(conf); err != nil {
		return err
	}
	holds := func() bool {
		b, err := os.ReadFile(path)
		return err == nil && strings.Contains(string(b), `"type": "leakguard"`)
	}
	waitHolds := func(start time.Time) (time.Duration, error) {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for !holds() {
			if time.Since(start) > 5*time.Second {
				return 0, fmt.Errorf("entry not back after 5 s")
			}
			select {
			case <-w.Events:
			case <-tick.C:
			}
		}
		return time.Since(start), nil
	}
	if _, err := waitHolds(time.Now()); err != nil {
		return fmt.Errorf("first insertion: %w", err)
	}
	var byRename, inPlace []time.Duration
	for i := 0; i < rounds; i++ {
		time.Sleep(100 * time.Millisecond) // each rewrite stands alone
		content := strings.Replace(primary, "cni0", "cni"+strconv.Itoa(i), 1)
		start := time.Now()
		if i%2 == 0 {
			err = rewriteByRename(path, content)
		} else {
			err = os.WriteFile(path, []byte(content), 0o644)
		}
		if err != nil {
			return err
		}
		d, err := waitHolds(start)
		if err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		if i%2 == 0 {
			byRename = append(byRename, d)
		} else {
			inPlace = append(inPlace, d)
		}
	}
	all := slices.Concat(byRename, inPlace)
	fmt.Printf("re-insertion latency over %d rewrites: %s\n", rounds, quantiles(all))
	fmt.Printf("  by rename (%d): %s\n", len(byRename), quantiles(byRename))
	fmt.Printf("  in place  (%d): %s\n", len(inPlace), quantiles(inPlace))

	time.Sleep(2 * time.Second)
	cpu0, err := cpuTicks(inst.Process.Pid)
	if err != nil {
		return err
	}
	time.Sleep(idle)
	cpu1, err := cpuTicks(inst.Process.Pid)
	if err != nil {
		return err
	}
	const hz = 100 // USER_HZ
	used := time.Duration(cpu1-cpu0) * time.Second / hz
	fmt.Printf("installer idle over %v: %v CPU (%.3f%% of a core; /proc tick is 10 ms); RSS %s\n",
		idle, used, 100*used.Seconds()/idle.Seconds(), rss(inst.Process.Pid))

	return serve(ctl, root, conf, bin, serveFor)
}

func serve(ctl, root, conf, bin string, d time.Duration) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(ctl, "serve", "--listen", addr, "--interval", "1s", "--state-dir", filepath.Join(root, "state"),
		"--cni-conf-dir", conf, "--cni-bin-dir", bin, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(d)
	scrapes := 0
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
			resp.Body.Close()
			scrapes++
		}
	}
	fmt.Printf("agent after %v (a scan a second, %d scrapes): %s\n", d, scrapes, rss(cmd.Process.Pid))
	return nil
}

func rewriteByRename(path, content string) error {
	tmp := filepath.Join(filepath.Dir(path), ".agent.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	r := func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
	return fmt.Sprintf("median %s, p95 %s, max %s", r(q(0.5)), r(q(0.95)), r(s[len(s)-1]))
}

// cpuTicks is utime+stime of pid, in clock ticks.
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, err
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	return ut + st, err
}

// rss is VmRSS and VmHWM of pid.
func rss(pid int) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if l := s.Text(); strings.HasPrefix(l, "VmRSS:") || strings.HasPrefix(l, "VmHWM:") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(out, ", ")
}
