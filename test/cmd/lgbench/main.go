// Command lgbench measures what leakguard costs a node, for `make bench`.
//
// It runs the reference bridge plugin chained with leakguard, and the same
// chain with the reference tuning plugin instead, the way a runtime does
// (libcni): each plugin binary exec'd with CNI_* in its environment and its
// config on stdin, ADD in order with each plugin's result as the next one's
// prevResult, DEL in reverse with the ADD result as prevResult. Each pod gets
// a fresh netns. It then measures leakguard's DEL of a leaked pod (netns path
// gone) on a node with few and with many unrelated links, and wrapper mode
// (leakguard wrapping bridge) against the bridge+leakguard chain.
//
// It must run in a throw-away netns and private mount namespace, which
// scripts/bench.sh provides (ip netns exec); it refuses to run in the
// machine's own netns. Every netns it creates is bind-mounted in that private
// mount namespace and dies with it.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

const cniVersion = "1.0.0"

type options struct {
	netns       string // path of the throw-away netns lgbench must run in
	cniBin      string // reference plugins
	leakguard   string // the plugin under test
	workDir     string
	pods        int // pods per chain for the ADD/DEL comparison
	gonePods    int // leaked pods per node for the netns-gone DEL
	wrapperPods int // pods per variant and phase for wrapper mode against the chain
	fewLinks    int
	manyLinks   int
	warmup      int
	stateFS     string // "tmpfs" (like /run on a node) or "disk"
	stateDir    string // where leakguard's and tuning's state dirs live
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == launcherArg {
		launch(os.Args[2:])
		return
	}
	var o options
	flag.StringVar(&o.netns, "netns", "", "path of the throw-away netns lgbench runs in (checked)")
	flag.StringVar(&o.cniBin, "cni-bin", os.Getenv("LEAKGUARD_CNI_BIN"), "directory of the reference CNI plugins")
	flag.StringVar(&o.leakguard, "leakguard", filepath.Join(os.Getenv("LEAKGUARD_BIN_DIR"), "leakguard"), "leakguard plugin binary")
	flag.StringVar(&o.workDir, "work-dir", "", "scratch directory (state dirs, netns mounts); required")
	flag.IntVar(&o.pods, "pods", 120, "pods per chain for the ADD/DEL comparison")
	flag.IntVar(&o.gonePods, "gone-pods", 80, "leaked pods per node for the DEL-with-netns-gone comparison")
	flag.IntVar(&o.wrapperPods, "wrapper-pods", 60, "pods per variant and phase for wrapper(bridge) against bridge+leakguard")
	flag.IntVar(&o.fewLinks, "few-links", 10, "unrelated links on the small node")
	flag.IntVar(&o.manyLinks, "many-links", 2000, "unrelated links on the big node")
	flag.IntVar(&o.warmup, "warmup", 3, "unmeasured pods first, per chain and per node")
	flag.StringVar(&o.stateFS, "state-fs", "tmpfs", "filesystem of the plugins' state dirs: tmpfs (as /run on a node) or disk (the work dir's)")
	flag.Parse()
	// Stop with bench.sh: its EXIT trap deletes the netns we run in.
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "lgbench: %v\n", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if err := checkThrowAwayNetns(o.netns); err != nil {
		return err
	}
	if o.workDir == "" || o.cniBin == "" {
		return errors.New("-work-dir and -cni-bin are required")
	}
	for _, p := range []string{o.leakguard, filepath.Join(o.cniBin, "bridge"), filepath.Join(o.cniBin, "tuning")} {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	d := nsDir(filepath.Join(o.workDir, "netns"))
	if err := os.MkdirAll(string(d), 0o755); err != nil {
		return err
	}
	o.stateDir = filepath.Join(o.workDir, "state")
	if err := os.MkdirAll(o.stateDir, 0o755); err != nil {
		return err
	}
	switch o.stateFS {
	case "tmpfs":
		// Private to our mount namespace (ip netns exec): gone when we exit.
		if err := unix.Mount("tmpfs", o.stateDir, "tmpfs", 0, "size=64m,mode=0755"); err != nil {
			return fmt.Errorf("mount tmpfs for state dirs: %w", err)
		}
		defer unix.Unmount(o.stateDir, unix.MNT_DETACH)
	case "disk":
	default:
		return fmt.Errorf("-state-fs %q: want tmpfs or disk", o.stateFS)
	}
	floor, err := launcherFloor()
	if err != nil {
		return err
	}
	a, err := compareChains(o, d)
	if err != nil {
		return err
	}
	g, err := compareGone(o, d)
	if err != nil {
		return err
	}
	w, err := compareWrapper(o, d)
	if err != nil {
		return err
	}
	printReport(o, floor, a, g, w)
	return nil
}

// checkThrowAwayNetns makes sure a bug here can never touch the machine's
// own interfaces: lgbench runs only inside the netns bench.sh created for it
// (same nsfs device and inode), and only while that netns is still empty.
func checkThrowAwayNetns(expect string) error {
	if expect == "" {
		return errors.New("-netns is required: run me through scripts/bench.sh (make bench)")
	}
	var self, want unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		return err
	}
	if err := unix.Stat(expect, &want); err != nil {
		return err
	}
	if self.Dev != want.Dev || self.Ino != want.Ino {
		return fmt.Errorf("refusing to run: not inside the throw-away netns %s (use scripts/bench.sh)", expect)
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			return fmt.Errorf("refusing to run: netns %s is not empty (has %s)", expect, l.Attrs().Name)
		}
	}
	return nil
}

// launcherFloor is the peak RSS reported for /bin/true: no plugin can be
// measured below it.
func launcherFloor() (int64, error) {
	var peak int64
	for range 5 {
		_, s, err := invocation{plugin: "/bin/true", env: os.Environ()}.run()
		if err != nil {
			return 0, err
		}
		peak = max(peak, s.MaxRSS)
	}
	return peak, nil
}

// plugin is one entry of a conflist.
type plugin struct {
	path string
	conf map[string]any
}

// chain is a conflist: network name, bridge first, one chained plugin.
type chain struct {
	label   string // e.g. "bridge+tuning"
	chained string // e.g. "tuning"
	net     string
	plugins []plugin
}

// newChains returns the chains compared, on one node: bridge+leakguard,
// bridge+tuning, and bridge+leakguard with its state dir on disk (not the
// tmpfs) to show what fsync costs where /run is not a tmpfs. It returns the
// three in that order: guarded, tuned, on disk.
func newChains(o options, bridge, subnet, tag string) (chain, chain, chain) {
	var guarded, tuned, onDisk chain
	br := func(net, sub string) plugin {
		return plugin{filepath.Join(o.cniBin, "bridge"), map[string]any{
			"type": "bridge", "bridge": "br-" + net, "isGateway": true, "ipMasq": false,
			"ipam": map[string]any{"type": "host-local", "subnet": sub,
				"dataDir": filepath.Join(o.workDir, "ipam", net)},
		}}
	}
	lg := func(stateDir string) plugin {
		return plugin{o.leakguard, map[string]any{"type": "leakguard", "stateDir": stateDir,
			"pinDir": stateDir + "-pins", "logLevel": "info"}}
	}
	tu := plugin{filepath.Join(o.cniBin, "tuning"), map[string]any{
		"type": "tuning", "dataDir": filepath.Join(o.stateDir, "tuning-"+tag),
		"sysctl": map[string]any{"net.ipv4.conf.IFNAME.log_martians": "0"},
	}}
	guarded = chain{"bridge+leakguard", "leakguard", bridge + "g",
		[]plugin{br(bridge+"g", subnet+".1.0/24"), lg(filepath.Join(o.stateDir, "leakguard-"+tag))}}
	tuned = chain{"bridge+tuning", "tuning", bridge + "t",
		[]plugin{br(bridge+"t", subnet+".2.0/24"), tu}}
	onDisk = chain{"bridge+leakguard, state on disk", "leakguard-disk", bridge + "d",
		[]plugin{br(bridge+"d", subnet+".3.0/24"), lg(filepath.Join(o.workDir, "leakguard-disk-"+tag))}}
	return guarded, tuned, onDisk
}

// stdin is the config libcni hands plugin p: its conflist entry plus the
// network name, the version and the previous result.
func (c chain) stdin(p plugin, prev []byte) ([]byte, error) {
	conf := map[string]any{}
	for k, v := range p.conf {
		conf[k] = v
	}
	conf["name"], conf["cniVersion"] = c.net, cniVersion
	if prev != nil {
		conf["prevResult"] = json.RawMessage(prev)
	}
	return json.Marshal(conf)
}

// pluginSamples holds one sample per plugin of a chain, in conflist order.
type pluginSamples []sample

// add runs the chain's ADD in node; it returns the final result.
func (c chain) add(o options, node ns.NetNS, cid, netnsPath string) ([]byte, pluginSamples, error) {
	var prev []byte
	var ss pluginSamples
	for _, p := range c.plugins {
		in, err := c.stdin(p, prev)
		if err != nil {
			return nil, nil, err
		}
		inv := invocation{plugin: p.path, env: cniEnv("ADD", cid, netnsPath, o.cniBin), stdin: in}
		var s sample
		err = node.Do(func(ns.NetNS) error {
			prev, s, err = inv.run()
			return err
		})
		if err != nil {
			return nil, nil, fmt.Errorf("%s ADD: %w", c.label, err)
		}
		ss = append(ss, s)
	}
	return prev, ss, nil
}

// del runs the chain's DEL in node, in reverse order, with the ADD result
// as prevResult; only, if set, selects the plugins (by index) to run.
func (c chain) del(o options, node ns.NetNS, cid, netnsPath string, result []byte, only func(i int) bool) (pluginSamples, error) {
	ss := make(pluginSamples, len(c.plugins))
	for i := len(c.plugins) - 1; i >= 0; i-- {
		if only != nil && !only(i) {
			continue
		}
		in, err := c.stdin(c.plugins[i], result)
		if err != nil {
			return nil, err
		}
		inv := invocation{plugin: c.plugins[i].path, env: cniEnv("DEL", cid, netnsPath, o.cniBin), stdin: in}
		err = node.Do(func(ns.NetNS) error {
			_, ss[i], err = inv.run()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s DEL: %w", c.label, err)
		}
	}
	return ss, nil
}

// chainResults is part A: per chain, per verb, one pluginSamples per pod;
// and the bare start-up cost (CNI_COMMAND=VERSION) of each chained plugin.
type chainResults struct {
	chains  []chain
	add     map[string][]pluginSamples
	del     map[string][]pluginSamples
	startup map[string][]sample
}

func compareChains(o options, d nsDir) (*chainResults, error) {
	node, err := d.create("node-a")
	if err != nil {
		return nil, err
	}
	defer remove(node)
	guarded, tuned, onDisk := newChains(o, "a", "10.201", "a")
	r := &chainResults{chains: []chain{tuned, guarded},
		add: map[string][]pluginSamples{}, del: map[string][]pluginSamples{}, startup: map[string][]sample{}}
	if o.stateFS == "tmpfs" && !isTmpfs(o.workDir) {
		r.chains = append(r.chains, onDisk)
	}
	for i := range o.warmup + o.pods {
		// Rotate the order, so that drift and noise hit every chain alike.
		k := i % len(r.chains)
		order := append(slices.Clone(r.chains[k:]), r.chains[:k]...)
		for _, c := range order {
			pod, err := d.create(fmt.Sprintf("pod-a-%s-%d", c.chained, i))
			if err != nil {
				return nil, err
			}
			cid := fmt.Sprintf("bench-%s-%d", c.chained, i)
			result, addS, err := c.add(o, node, cid, pod.Path())
			if err != nil {
				remove(pod)
				return nil, err
			}
			delS, err := c.del(o, node, cid, pod.Path(), result, nil)
			remove(pod)
			if err != nil {
				return nil, err
			}
			up, err := c.startup(o)
			if err != nil {
				return nil, err
			}
			if i >= o.warmup {
				r.add[c.label] = append(r.add[c.label], addS)
				r.del[c.label] = append(r.del[c.label], delS)
				r.startup[c.label] = append(r.startup[c.label], up)
			}
		}
	}
	return r, nil
}

// startup runs the chained plugin with CNI_COMMAND=VERSION: the cost of
// exec'ing it and starting its runtime, with no work.
func (c chain) startup(o options) (sample, error) {
	inv := invocation{plugin: c.plugins[1].path, env: cniEnv("VERSION", "", "", o.cniBin),
		stdin: []byte(`{"cniVersion":"` + cniVersion + `"}`)}
	_, s, err := inv.run()
	return s, err
}

func isTmpfs(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.TMPFS_MAGIC
}

// goneResults is part B: leakguard's DEL of leaked pods per node size.
type goneResults struct {
	links  []int
	del    map[int][]sample
	reaped map[int]int
}

func compareGone(o options, d nsDir) (*goneResults, error) {
	crowd, err := d.create("crowd")
	if err != nil {
		return nil, err
	}
	defer remove(crowd)
	r := &goneResults{links: []int{o.fewLinks, o.manyLinks}, del: map[int][]sample{}, reaped: map[int]int{}}
	nodes := map[int]ns.NetNS{}
	chains := map[int]chain{}
	for i, n := range r.links {
		node, err := d.create(fmt.Sprintf("node-b-%d", n))
		if err != nil {
			return nil, err
		}
		defer remove(node)
		if err := node.Do(func(ns.NetNS) error { return addCrowd(n, crowd, fmt.Sprintf("c%d-", i)) }); err != nil {
			return nil, err
		}
		nodes[n] = node
		chains[n], _, _ = newChains(o, fmt.Sprintf("b%d", i), fmt.Sprintf("10.%d", 210+i), fmt.Sprintf("b%d", i))
	}
	onlyLeakguard := func(i int) bool { return i == 1 }
	onlyBridge := func(i int) bool { return i == 0 }
	for i := range o.warmup + o.gonePods {
		order := r.links
		if i%2 == 1 {
			order = []int{r.links[1], r.links[0]}
		}
		for _, n := range order {
			node, c := nodes[n], chains[n]
			pod, err := d.create(fmt.Sprintf("pod-b-%d-%d", n, i))
			if err != nil {
				return nil, err
			}
			path := pod.Path()
			cid := fmt.Sprintf("bench-gone-%d-%d", n, i)
			result, _, err := c.add(o, node, cid, path)
			if err != nil {
				remove(pod)
				return nil, err
			}
			hostVeth, err := hostVethOf(result, "br-"+c.net)
			if err != nil {
				remove(pod)
				return nil, err
			}
			pin, err := leak(pod)
			if err != nil {
				return nil, err
			}
			ss, err := c.del(o, node, cid, path, result, onlyLeakguard)
			reaped := false
			if err == nil {
				err = node.Do(func(ns.NetNS) error {
					reaped = !linkExists(hostVeth)
					return nil
				})
			}
			if err == nil { // release the pod's IP, as the runtime would next
				_, err = c.del(o, node, cid, path, result, onlyBridge)
			}
			unix.Close(pin)
			if err != nil {
				return nil, err
			}
			if i >= o.warmup {
				r.del[n] = append(r.del[n], ss[1])
				if reaped {
					r.reaped[n]++
				}
			}
		}
		// The kernel frees closed netns asynchronously; let it catch up
		// so that one pod's teardown does not land in the next one's DEL.
		time.Sleep(5 * time.Millisecond)
	}
	return r, nil
}

// hostVethOf finds the host end of the pod's veth in a bridge result: the
// interface with a MAC, outside the sandbox, that is not the bridge.
func hostVethOf(result []byte, bridge string) (string, error) {
	var res struct {
		Interfaces []struct {
			Name    string `json:"name"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
	}
	if err := json.Unmarshal(result, &res); err != nil {
		return "", fmt.Errorf("parse ADD result: %w", err)
	}
	for _, i := range res.Interfaces {
		if i.Sandbox == "" && i.Name != bridge {
			return i.Name, nil
		}
	}
	return "", fmt.Errorf("no host veth in ADD result %s", result)
}
