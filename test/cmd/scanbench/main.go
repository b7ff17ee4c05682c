// Command scanbench measures `leakguardctl scan` on a node with many pods,
// half of them leaked. It must run as root in a throw-away netns that plays
// the node, inside a private mount namespace (scripts/bench-scan.sh runs it
// under `ip netns exec`):
//
//	scanbench -leakguardctl bin/leakguardctl -work-dir DIR [-pods 1000] [-runs 5]
//
// It creates -pods network namespaces, each wired to the node by a veth.
// Even-numbered pods stay reachable through a bind mount under DIR (as a
// runtime's /run/netns/cni-... does) and, every -proc-every'th one, through a
// process inside instead; odd-numbered pods are leaked the way auth_rpcgss
// does it: a socket created inside is their only reference. Then it runs the
// scan -runs times, checks that exactly the leaked pods are reported, and
// prints wall time and peak RSS. Then it runs the agent (leakguardctl serve)
// for -agent-scans scans and prints its scan time, CPU per scan and RSS.
// Everything it created dies with it (sockets, children) and with its mount
// namespace (the bind mounts).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

type config struct {
	ctl, workDir    string
	pods, runs      int
	procEvery       int
	recheck         time.Duration
	agentScans      int
	agentInterval   time.Duration
	keepProcs       []*exec.Cmd
	leakedSockets   []int
	reachableMounts int
}

func main() {
	var c config
	flag.StringVar(&c.ctl, "leakguardctl", "bin/leakguardctl", "leakguardctl binary to measure")
	flag.StringVar(&c.workDir, "work-dir", "", "empty directory for the netns bind mounts (required; a tmpfs is mounted on it)")
	flag.IntVar(&c.pods, "pods", 1000, "pod network namespaces, each with a veth into the node; half are leaked")
	flag.IntVar(&c.runs, "runs", 5, "scans to time")
	flag.IntVar(&c.procEvery, "proc-every", 10, "every Nth reachable pod is held by a process inside it instead of a mount (0: none)")
	flag.DurationVar(&c.recheck, "recheck", 200*time.Millisecond, "leakguardctl's --recheck")
	flag.IntVar(&c.agentScans, "agent-scans", 10, "then run the agent (leakguardctl serve) for this many scans (0: skip)")
	flag.DurationVar(&c.agentInterval, "agent-interval", 2*time.Second, "the agent's --interval while measured")
	flag.Parse()
	if c.workDir == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	// Every thread but this one stays in the node netns; this one visits
	// each new pod netns and comes back.
	runtime.LockOSThread()
	err := run(&c)
	for _, p := range c.keepProcs {
		_ = p.Process.Kill()
		_ = p.Wait()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "scanbench: %v\n", err)
		os.Exit(1)
	}
}

func run(c *config) error {
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set parent-death signal: %w", err)
	}
	if err := unix.Mount("tmpfs", c.workDir, "tmpfs", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", c.workDir, err)
	}
	defer unix.Unmount(c.workDir, unix.MNT_DETACH)

	start := time.Now()
	if err := c.createPods(); err != nil {
		return err
	}
	leaked := len(c.leakedSockets)
	fmt.Printf("setup: %d pod netns with a veth each into the node: %d leaked (held by a socket only), %d reachable (%d by a bind mount, %d by a process), in %.1fs\n",
		c.pods, leaked, c.pods-leaked, c.reachableMounts, len(c.keepProcs), time.Since(start).Seconds())

	for _, mode := range []struct {
		name    string
		recheck time.Duration
	}{{"scan (with re-check)", c.recheck}, {"scan, one pass (--recheck 0)", 0}} {
		var walls, internal []float64
		var peak int64
		var last *report
		for i := 0; i < c.runs; i++ {
			wall, rss, rep, err := c.scanOnce(mode.recheck)
			if err != nil {
				return err
			}
			last = rep
			if rep.LeakedNetns != leaked || len(rep.Leaks) != leaked {
				return fmt.Errorf("scan reported %d leaked netns behind %d links, want %d", rep.LeakedNetns, len(rep.Leaks), leaked)
			}
			walls = append(walls, wall.Seconds())
			internal = append(internal, rep.DurationSeconds)
			peak = max(peak, rss)
		}
		fmt.Printf("%-30s wall median %.3fs max %.3fs (scan itself median %.3fs), peak RSS %.1f MiB over %d runs, %d leaks found\n",
			mode.name+":", median(walls), slices.Max(walls), median(internal), float64(peak)/1024, c.runs, leaked)
		if mode.recheck > 0 {
			if last.Slab.Available {
				fmt.Printf("slab estimate of leaked netns on this machine: %d to %d (%d leaked by this benchmark)\n", last.Slab.LowerBound, last.Slab.Leaked, leaked)
			} else {
				fmt.Printf("slab estimate: unavailable (%s)\n", last.Slab.Reason)
			}
			verdict := "PASS"
			if median(walls) >= 1 {
				verdict = "MISS"
			}
			fmt.Printf("target: scan of %d netns (%d leaked) under 1s: %s\n", c.pods, leaked, verdict)
		}
	}
	if c.agentScans > 0 {
		return c.runAgent(leaked)
	}
	return nil
}

func (c *config) createPods() error {
	node, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open node netns: %w", err)
	}
	defer node.Close()
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink in node: %w", err)
	}
	defer h.Close()
	for i := 0; i < c.pods; i++ {
		if err := c.createPod(i, node, h); err != nil {
			return fmt.Errorf("pod %d: %w", i, err)
		}
	}
	return nil
}

func (c *config) createPod(i int, node netns.NsHandle, h *netlink.Handle) error {
	pod, err := netns.New() // this thread is now in the pod netns
	if err != nil {
		return fmt.Errorf("create netns: %w", err)
	}
	defer pod.Close()
	leak := i%2 == 1
	if leak {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			_ = netns.Set(node)
			return fmt.Errorf("create pinning socket: %w", err)
		}
		c.leakedSockets = append(c.leakedSockets, fd)
	}
	if err := netns.Set(node); err != nil {
		return fmt.Errorf("back to the node netns: %w", err)
	}
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("lgb%d", i)},
		PeerName:  "eth0", PeerNamespace: netlink.NsFd(int(pod)),
	}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	if leak {
		return nil
	}
	if c.procEvery > 0 && (i/2)%c.procEvery == 0 {
		return c.keepByProcess(pod)
	}
	src := fmt.Sprintf("/proc/self/fd/%d", int(pod))
	target := filepath.Join(c.workDir, fmt.Sprintf("pod%d", i))
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		return err
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount netns on %s: %w", target, err)
	}
	c.reachableMounts++
	return nil
}

// keepByProcess starts `sleep` inside pod (a pause container, in effect).
func (c *config) keepByProcess(pod netns.NsHandle) error {
	dup, err := unix.Dup(int(pod))
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), "pod-netns")
	defer f.Close()
	cmd := exec.Command("nsenter", "--net=/proc/self/fd/3", "sleep", "3600")
	cmd.ExtraFiles = []*os.File{f} // fd 3 in the child
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start a process in the pod: %w", err)
	}
	c.keepProcs = append(c.keepProcs, cmd)
	return nil
}

// report is the part of `leakguardctl scan --json` the benchmark checks.
type report struct {
	DurationSeconds float64 `json:"durationSeconds"`
	LeakedNetns     int     `json:"leakedNetns"`
	Leaks           []struct {
		HostLink string `json:"hostLink"`
	} `json:"leaks"`
	Slab struct {
		Available  bool   `json:"available"`
		Leaked     int    `json:"leakedEstimate"`
		LowerBound int    `json:"leakedLowerBound"`
		Reason     string `json:"reason"`
	} `json:"slab"`
}

func (c *config) scanOnce(recheck time.Duration) (time.Duration, int64, *report, error) {
	cmd := exec.Command(c.ctl, "scan", "--json", "--recheck", recheck.String(),
		"--state-dir", filepath.Join(c.workDir, "state"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	wall := time.Since(start)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("leakguardctl scan: %v: %s", err, stderr.String())
	}
	var rep report
	if err := json.Unmarshal(out, &rep); err != nil {
		return 0, 0, nil, fmt.Errorf("decode scan output: %w", err)
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss // KiB on Linux
	}
	return wall, rss, &rep, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
