package stress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/test/cnitest"
	"github.com/leakguard/leakguard/test/nsutil"
)

// callTimeout bounds one cnitool or plugin run: far above a DEL's worst
// case (a 10 s lock wait), so only a hang hits it.
const callTimeout = 60 * time.Second

const ifName = "eth0"

// nodeSeq makes network names unique: libcni's result cache in
// /var/lib/cni/results is shared with every other test, and `cnitool gc`
// DELs every cached attachment of its network name.
var nodeSeq atomic.Int64

// node is a throw-away netns playing the host, with one copy of the example
// bridge chain whose state (leakguard's state dir, host-local's data dir)
// lives in a temp dir.
type node struct {
	t        *testing.T
	ns       ns.NetNS
	h        netlinksafe.Handle
	network  string
	version  string
	pin      bool
	stateDir string
	pinDir   string
	ipamDir  string
	logFile  string
	// chainConf holds bridge then leakguard, mainConf bridge alone under the
	// same network name (for ADDs whose leakguard step is run by hand).
	chainConf string
	mainConf  string
	// leakguardConf is leakguard's entry of the chain, as libcni passes it.
	leakguardConf map[string]any
}

func newNode(t *testing.T, pin bool) *node {
	t.Helper()
	root, err := cnitest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	n := &node{
		t:        t,
		ns:       nsutil.NewNS(t),
		network:  fmt.Sprintf("lgstress-%d-%d", os.Getpid(), nodeSeq.Add(1)),
		pin:      pin,
		stateDir: filepath.Join(tmp, "state"),
		ipamDir:  filepath.Join(tmp, "ipam"),
		logFile:  filepath.Join(tmp, "leakguard.log"),
	}
	n.pinDir = filepath.Join(n.stateDir, "netns")
	// Pinning makes the pin dir a mount point; undo it before TempDir's
	// removal (cleanups run last-registered first).
	t.Cleanup(func() {
		for unix.Unmount(n.pinDir, unix.MNT_DETACH) == nil {
			n.t.Logf("unmounted pin dir %s", n.pinDir)
		}
	})
	src := filepath.Join(root, "conf", "10-bridge-leakguard.conflist")
	for _, c := range []struct {
		dir     *string
		without bool
	}{{&n.chainConf, false}, {&n.mainConf, true}} {
		*c.dir = filepath.Join(tmp, map[bool]string{false: "chain.d", true: "main.d"}[c.without])
		if err := os.Mkdir(*c.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		list, err := cnitest.WriteConf(src, *c.dir, cnitest.ConfOptions{
			StateDir:         n.stateDir,
			LogFile:          n.logFile,
			LogLevel:         "debug",
			IPAMDataDir:      n.ipamDir,
			Name:             n.network,
			PinNetns:         &pin,
			WithoutLeakguard: c.without,
		})
		if err != nil {
			t.Fatal(err)
		}
		n.version = list.CNIVersion
	}
	n.leakguardConf = n.loadLeakguardConf(filepath.Join(n.chainConf, filepath.Base(src)))
	if n.h, err = netlinksafe.NewHandleAt(netns.NsHandle(n.ns.Fd())); err != nil {
		t.Fatalf("netlink handle in node netns: %v", err)
	}
	t.Cleanup(n.h.Close)
	t.Cleanup(func() {
		if b, err := os.ReadFile(n.logFile); t.Failed() && err == nil {
			t.Logf("leakguard log (last 200 lines):\n%s", tail(b, 200))
		}
	})
	return n
}

func (n *node) loadLeakguardConf(path string) map[string]any {
	n.t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		n.t.Fatal(err)
	}
	var list struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		n.t.Fatal(err)
	}
	for _, p := range list.Plugins {
		if p["type"] == "leakguard" {
			return p
		}
	}
	n.t.Fatalf("%s has no leakguard entry", path)
	return nil
}

// logOf returns leakguard's log lines about p.
func (n *node) logOf(p *pod) string {
	b, err := os.ReadFile(n.logFile)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, p.id) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func tail(b []byte, lines int) []byte {
	for i := len(b) - 2; i >= 0; i-- {
		if b[i] == '\n' {
			if lines--; lines == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}

// addDecoy puts a veth pair on the node that belongs to no pod: nothing may
// ever delete it.
func (n *node) addDecoy() {
	n.t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "decoy0"
	if err := n.h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "decoy1"}); err != nil {
		n.t.Fatalf("create decoy veth pair: %v", err)
	}
}

// pod is one sandbox: its netns and what the bridge's ADD made for it.
type pod struct {
	i      int
	ns     ns.NetNS // nil once leaked
	path   string
	id     string // CNI_CONTAINERID, as cnitool derives it from the path
	result []byte // the main plugin's ADD result
	host   linkID // its host veth
	holder *exec.Cmd
}

func (n *node) newPod(i int) *pod {
	n.t.Helper()
	p := &pod{i: i, ns: nsutil.NewNS(n.t)}
	p.path = p.ns.Path()
	p.id = cnitest.ContainerID(p.path)
	cache := cnitest.CacheFile(n.network, p.path, ifName)
	n.t.Cleanup(func() { _ = os.Remove(cache) })
	n.t.Cleanup(func() { p.release() })
	return p
}

func (n *node) newPods(count int) []*pod {
	pods := make([]*pod, count)
	for i := range pods {
		pods[i] = n.newPod(i)
	}
	return pods
}

func (n *node) key(p *pod) record.Key {
	return record.Key{Network: n.network, ContainerID: p.id, IfName: ifName}
}

// cnitool runs `cnitool verb` on p with the conflist in confDir, inside the
// node netns, as a runtime on that node would.
func (n *node) cnitool(verb, confDir string, p *pod) ([]byte, error) {
	cmd := exec.Command("nsenter", "--net="+n.ns.Path(), "--", tools.Cnitool(), verb, n.network, p.path)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"CNI_PATH=" + tools.CNIPath(),
		"NETCONFPATH=" + confDir,
		"CNI_IFNAME=" + ifName,
	}
	out, err := runBounded(cmd, nil)
	if err != nil {
		return out, fmt.Errorf("cnitool %s %s: %w", verb, filepath.Base(p.path), err)
	}
	return out, nil
}

// add runs the whole chain's ADD (bridge, then leakguard) through cnitool.
func (n *node) add(p *pod) error {
	out, err := n.cnitool("add", n.chainConf, p)
	if err != nil {
		return err
	}
	return n.setResult(p, out)
}

// mainAdd runs only the bridge's ADD, under the chain's network name; the
// leakguard step is then run by hand (leakguardCmd) with its result.
func (n *node) mainAdd(p *pod) error {
	out, err := n.cnitool("add", n.mainConf, p)
	if err != nil {
		return err
	}
	return n.setResult(p, out)
}

// del runs the whole chain's DEL (leakguard, then bridge) through cnitool,
// which feeds it the cached ADD result.
func (n *node) del(p *pod) error {
	_, err := n.cnitool("del", n.chainConf, p)
	return err
}

// gc runs `cnitool gc`: no list of valid attachments, as cnitool sends. Its
// netns argument is not used by GC.
func (n *node) gc() error {
	_, err := n.cnitool("gc", n.chainConf, &pod{path: "/run/netns/none"})
	return err
}

// setResult keeps the main plugin's result and finds the pod's host veth in
// it.
func (n *node) setResult(p *pod, out []byte) error {
	r, err := create.CreateFromBytes(out)
	if err != nil {
		return fmt.Errorf("parse ADD result %q: %w", out, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return fmt.Errorf("convert ADD result: %w", err)
	}
	for _, intf := range res.Interfaces {
		if intf.Sandbox != "" {
			continue
		}
		l, err := n.h.LinkByName(intf.Name)
		if err != nil {
			return fmt.Errorf("host interface %s of the ADD result: %w", intf.Name, err)
		}
		if l.Type() == "veth" {
			p.host = idOf(l)
		}
	}
	if p.host.Index == 0 {
		return fmt.Errorf("no host veth in ADD result %s", out)
	}
	p.result = out
	return nil
}

// leakguardCmd is leakguard's own step of the chain for verb, exec'd as
// libcni would: in the node netns, CNI_* in the environment, its conflist
// entry with name, cniVersion and the main plugin's result on stdin.
func (n *node) leakguardCmd(verb string, p *pod) *exec.Cmd {
	n.t.Helper()
	conf := make(map[string]any, len(n.leakguardConf)+3)
	for k, v := range n.leakguardConf {
		conf[k] = v
	}
	conf["name"], conf["cniVersion"] = n.network, n.version
	conf["prevResult"] = json.RawMessage(p.result)
	stdin, err := json.Marshal(conf)
	if err != nil {
		n.t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+n.ns.Path(), "--", filepath.Join(tools.Leakguard, "leakguard"))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"CNI_COMMAND=" + verb,
		"CNI_CONTAINERID=" + p.id,
		"CNI_NETNS=" + p.path,
		"CNI_IFNAME=" + ifName,
		"CNI_PATH=" + tools.CNIPath(),
	}
	cmd.Stdin = bytes.NewReader(stdin)
	return cmd
}

// runBounded runs cmd in a process group of its own and returns its stdout;
// the error carries stderr. A run past callTimeout is killed (the whole
// group: cnitool's plugins too) and reported as a hang. With started, it is
// called right after the start, e.g. to arm a kill.
func runBounded(cmd *exec.Cmd, started func(*os.Process)) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if started != nil {
		started(cmd.Process)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return stdout.Bytes(), fmt.Errorf("hung: killed after %v: %s", callTimeout, strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		// cobra follows cnitool's error with the usage text: keep the error.
		msg, _, _ := strings.Cut(stderr.String(), "\nUsage:")
		return stdout.Bytes(), fmt.Errorf("after %v: %w: %s", time.Since(start).Round(time.Millisecond), err, strings.TrimSpace(msg))
	}
	return stdout.Bytes(), nil
}

// leakHow is the non-path reference that keeps a leaked netns alive.
type leakHow int

const (
	// bySocket: leaksim holds a socket created inside the netns, the
	// auth_rpcgss way (no process, mount or nsfs fd reaches the netns).
	bySocket leakHow = iota
	// byFD: a helper process holds an open nsfs fd of the netns.
	byFD
)

func (h leakHow) String() string { return [...]string{"socket", "nsfs fd"}[h] }

// leak makes p's netns leak: a helper process keeps it alive by a non-path
// reference, then the runtime's path is removed. The host veth must still
// be there (the netns lives on).
func (n *node) leak(p *pod, how leakHow) error {
	var cmd *exec.Cmd
	switch how {
	case bySocket:
		cmd = exec.Command(tools.Leaksim(), p.path)
	case byFD:
		f, err := os.Open(p.path)
		if err != nil {
			return err
		}
		defer f.Close()
		cmd = exec.Command("sleep", "infinity")
		cmd.ExtraFiles = []*os.File{f}
	}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s holder: %w", how, err)
	}
	p.holder = cmd
	if how == bySocket {
		// leaksim prints "pinned" once the socket exists.
		buf := make([]byte, len("pinned\n"))
		if _, err := io.ReadFull(stdout, buf); err != nil || string(buf) != "pinned\n" {
			return fmt.Errorf("leaksim did not pin %s: %q, %v", p.path, buf, err)
		}
	}
	_ = p.ns.Close()
	p.ns = nil
	if err := nsutil.RemovePath(p.path); err != nil {
		return err
	}
	if _, err := os.Stat(p.path); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns path %s still there after the leak: %v", p.path, err)
	}
	if !n.present(p.host) {
		return fmt.Errorf("host veth %s vanished with the path: the netns did not leak", p.host)
	}
	return nil
}

// release ends p's holder process: the kernel may then free the netns.
func (p *pod) release() {
	if p.holder != nil {
		_ = p.holder.Process.Kill()
		_ = p.holder.Wait()
		p.holder = nil
	}
}

// parallel runs f for each pod at once and returns the errors, in pod order.
func parallel(pods []*pod, f func(*pod) error) []error {
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(p)
		}()
	}
	wg.Wait()
	return errs
}

// failures keeps the non-nil errors.
func failures(errs []error) []error {
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}
