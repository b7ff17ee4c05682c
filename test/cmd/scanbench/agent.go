package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// agentFigures is what one agent run measured.
type agentFigures struct {
	scans        int
	durations    []float64 // leakguard_scan_duration_seconds of each scan seen
	cpuPerScan   float64   // seconds of CPU (user+system) per scan, idle time included
	rssKiB       int64     // VmRSS at the end
	hwmKiB       int64     // VmHWM: peak RSS
	leakedNetns  int       // leakguard_leaked_netns after the last scan
	scanErrors   int
	measuredTime time.Duration
}

// runAgent runs `leakguardctl serve` on the node for c.agentScans scans at
// c.agentInterval and reads its figures from /metrics and /proc.
func (c *config) runAgent(leaked int) error {
	lo, err := netlinksafe.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in the node netns: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in the node netns: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("pick a free port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()

	cmd := exec.Command(c.ctl, "serve", "--listen", addr,
		"--interval", c.agentInterval.String(), "--recheck", c.recheck.String(),
		"--state-dir", filepath.Join(c.workDir, "state"), "--nri-state", "", "--log-level", "warn")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start leakguardctl serve: %w", err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	f, err := c.measureAgent(cmd.Process.Pid, "http://"+addr+"/metrics")
	if err != nil {
		return fmt.Errorf("%w (agent's stderr: %s)", err, stderr.String())
	}
	if f.leakedNetns != leaked {
		return fmt.Errorf("agent reported %d leaked netns, want %d", f.leakedNetns, leaked)
	}
	if f.scanErrors > 0 {
		return fmt.Errorf("agent reported %d failed scans (stderr: %s)", f.scanErrors, stderr.String())
	}
	cpuAt60 := f.cpuPerScan / 60 * 100
	fmt.Printf("agent (serve, --interval %v): %d scans in %.1fs, scan duration median %.3fs max %.3fs (200 ms re-check delay included), CPU %.3fs per scan (idle between scans included)\n",
		c.agentInterval, f.scans, f.measuredTime.Seconds(), median(f.durations), slices.Max(f.durations), f.cpuPerScan)
	fmt.Printf("agent: average CPU at the default 60 s interval %.3f%% of a core; RSS %.1f MiB (peak %.1f MiB)\n",
		cpuAt60, float64(f.rssKiB)/1024, float64(f.hwmKiB)/1024)
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	// The re-check delay is a sleep, not work: the target is the scan's own time.
	work := median(f.durations) - c.recheck.Seconds()
	fmt.Printf("target: agent scan of %d netns ≤ 0.3s (%.3fs without the re-check sleep): %s; ≤ 1%% of a core at 60 s: %s; RSS ≤ 30 MiB: %s\n",
		c.pods, work, verdict(work <= 0.3), verdict(cpuAt60 <= 1), verdict(f.hwmKiB <= 30*1024))
	return nil
}

func (c *config) measureAgent(pid int, url string) (*agentFigures, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(c.agentInterval*time.Duration(c.agentScans+2) + 30*time.Second)
	// The first scan runs at start-up: count from the first one seen, so
	// the agent's start (not a scan's work) is left out.
	var m map[string]float64
	var err error
	for {
		if m, err = scrape(client, url); err == nil && m["leakguard_scans_total"] >= 1 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("agent's first scan never showed on %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	f := &agentFigures{}
	startScans, lastStamp := m["leakguard_scans_total"], m["leakguard_scan_timestamp_seconds"]
	startCPU, err := cpuSeconds(pid)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for m["leakguard_scans_total"] < startScans+float64(c.agentScans) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("agent ran %v scans of %d in time", m["leakguard_scans_total"]-startScans, c.agentScans)
		}
		// Every scrape costs the agent a little CPU: poll slowly.
		time.Sleep(250 * time.Millisecond)
		if m, err = scrape(client, url); err != nil {
			return nil, err
		}
		if stamp := m["leakguard_scan_timestamp_seconds"]; stamp != lastStamp {
			lastStamp = stamp
			f.durations = append(f.durations, m["leakguard_scan_duration_seconds"])
		}
	}
	endCPU, err := cpuSeconds(pid)
	if err != nil {
		return nil, err
	}
	f.measuredTime = time.Since(start)
	f.scans = int(m["leakguard_scans_total"] - startScans)
	f.cpuPerScan = (endCPU - startCPU) / float64(f.scans)
	f.leakedNetns = int(m["leakguard_leaked_netns"])
	f.scanErrors = int(m["leakguard_scan_errors_total"])
	if len(f.durations) == 0 {
		return nil, fmt.Errorf("no scan duration seen")
	}
	if f.rssKiB, f.hwmKiB, err = memory(pid); err != nil {
		return nil, err
	}
	return f, nil
}

// scrape reads the unlabelled samples of a Prometheus text exposition.
func scrape(client *http.Client, url string) (map[string]float64, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<20))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			m[name] = v
		}
	}
	return m, sc.Err()
}

// cpuSeconds is the user+system CPU time of pid (all its threads).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	// utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
	ut, err1 := strconv.ParseUint(fields[11], 10, 64)
	st, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed CPU times in /proc/%d/stat", pid)
	}
	return float64(ut+st) / clockTicks, nil
}

// memory reads VmRSS and VmHWM (KiB) of pid.
func memory(pid int) (int64, int64, error) {
	var rss, hwm int64
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		switch key {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("no VmRSS/VmHWM in /proc/%d/status", pid)
	}
	return rss, hwm, nil
}
