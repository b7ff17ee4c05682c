package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/test/cnitest"
	"github.com/leakguard/leakguard/test/nsutil"
)

// chain is one example conflist of conf/.
type chain struct {
	name string
	file string
	// podArgs gives CNI_ARGS for the i-th pod (empty: none).
	podArgs func(i int) string
	// prepareNode creates what the main plugin expects on the node.
	prepareNode func(t *testing.T, e *env)
	// podOwnedRules says whether the main plugin adds ip rules per pod.
	podOwnedRules bool
	// main is the CNI type of the main plugin when it is not name.
	main string
	// masq says whether the main plugin masquerades the pod's traffic
	// (ipMasq: bridge's and ptp's iptables chain per container).
	masq bool
	// hostLocal says whether the main plugin's IPAM is host-local.
	hostLocal bool
}

// mainType is the CNI type of the chain's main plugin.
func (c chain) mainType() string {
	if c.main != "" {
		return c.main
	}
	return c.name
}

var chains = []chain{
	{name: "bridge", file: "10-bridge-leakguard.conflist", hostLocal: true},
	{name: "ptp", file: "10-ptp-leakguard.conflist", hostLocal: true},
	{
		name:          "tke-eni",
		file:          "10-tke-eni-leakguard.conflist",
		podArgs:       tkePodArgs,
		prepareNode:   addENILink,
		podOwnedRules: true,
	},
}

// tkePodArgs is what kubelet passes plus the pod's address for the test
// plugin: pod i is e2e/web-<i> with 10.77.0.<10+i>.
func tkePodArgs(i int) string {
	return fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=e2e;K8S_POD_NAME=web-%d;IP=%s/32", i, tkePodIP(i))
}

func tkePodIP(i int) net.IP { return net.IPv4(10, 77, 0, byte(10+i)).To4() }

// addENILink creates "eni0", the link the tke-eni example routes its table
// through. The kernel here has no dummy driver, so it is a veth pair whose
// both ends stay on the node: a host veth leakguard must never take for a pod's.
func addENILink(t *testing.T, e *env) {
	t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "eni0"
	if err := e.nodeH.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eni0-peer"}); err != nil {
		t.Fatalf("create eni0 in the node netns: %v", err)
	}
	for _, name := range []string{"eni0", "eni0-peer"} {
		l, err := e.nodeH.LinkByName(name)
		if err == nil {
			err = e.nodeH.LinkSetUp(l)
		}
		if err != nil {
			t.Fatalf("set %s up: %v", name, err)
		}
	}
}

// eniTable is the "table" of the tke-eni example conflist.
const eniTable = 100

// assertENITableRoute checks the per-ENI table still holds its default route
// out of eni0: ENI state shared by every pod, never a pod's to remove.
func (e *env) assertENITableRoute() {
	e.t.Helper()
	eni, err := e.nodeH.LinkByName("eni0")
	if err != nil {
		e.t.Fatalf("eni0: %v", err)
	}
	routes, err := e.nodeH.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: eniTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		e.t.Fatalf("list table %d: %v", eniTable, err)
	}
	if len(routes) != 1 || routes[0].LinkIndex != eni.Attrs().Index || routes[0].Dst != nil && !routes[0].Dst.IP.IsUnspecified() {
		e.t.Errorf("table %d: want only the default route via eni0, got %s", eniTable, describe(routes))
	}
}

// env is one node netns with one copy of a chain's conflist.
type env struct {
	t         *testing.T
	chain     chain
	node      ns.NetNS
	nodeH     netlinksafe.Handle
	network   string
	version   string
	leakguard bool
	stateDir  string
	pinDir    string // leakguard's default pin dir, <stateDir>/netns
	ipamDir   string // host-local's dataDir
	logFile   string
	confDir   string
	cnitool   cnitest.Cnitool
}

// envOptions say how the copy of the chain's config differs from conf/.
type envOptions struct {
	version      string
	withoutGuard bool
	pin          *bool          // leakguard's pinNetns, when set
	main         map[string]any // merged into the main plugin's config
	asList       bool           // a .conf copied as the one-element .conflist libcni makes of it
}

func newEnv(t *testing.T, c chain, version string, withLeakguard bool) *env {
	t.Helper()
	return newEnvWith(t, c, envOptions{version: version, withoutGuard: !withLeakguard})
}

func newEnvWith(t *testing.T, c chain, o envOptions) *env {
	t.Helper()
	root, err := cnitest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	e := &env{
		t:         t,
		chain:     c,
		node:      nsutil.NewNS(t),
		leakguard: !o.withoutGuard,
		stateDir:  filepath.Join(tmp, "state"),
		ipamDir:   filepath.Join(tmp, "ipam"),
		logFile:   filepath.Join(tmp, "leakguard.log"),
		confDir:   filepath.Join(tmp, "net.d"),
	}
	e.pinDir = filepath.Join(e.stateDir, "netns")
	if err := os.Mkdir(e.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := c.file
	if !filepath.IsAbs(src) {
		src = filepath.Join(root, "conf", c.file)
	}
	conf, err := cnitest.WriteConf(src, e.confDir, cnitest.ConfOptions{
		StateDir:         e.stateDir,
		LogFile:          e.logFile,
		LogLevel:         "debug",
		IPAMDataDir:      e.ipamDir,
		CNIVersion:       o.version,
		WithoutLeakguard: o.withoutGuard,
		PinNetns:         o.pin,
		Main:             o.main,
		AsList:           o.asList,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Pinning makes the pin dir a mount point (bind-mounted on itself):
	// undo it before TempDir's removal (cleanups run last-registered first).
	t.Cleanup(func() {
		for unix.Unmount(e.pinDir, unix.MNT_DETACH) == nil { //nolint:revive // unmount every stacked mount
		}
	})
	e.network, e.version = conf.Name, conf.CNIVersion
	if e.nodeH, err = netlinksafe.NewHandleAt(netns.NsHandle(e.node.Fd())); err != nil {
		t.Fatalf("netlink handle in node netns: %v", err)
	}
	t.Cleanup(e.nodeH.Close)
	e.cnitool = cnitest.Cnitool{Tools: tools, NodeNS: e.node.Path(), NetConfPath: e.confDir}
	t.Cleanup(func() {
		if b, err := os.ReadFile(e.logFile); t.Failed() && err == nil {
			t.Logf("leakguard log:\n%s", b)
		}
	})
	if c.prepareNode != nil {
		c.prepareNode(t, e)
	}
	return e
}

// pod is one sandbox: its netns and what the chain's ADD made for it.
type pod struct {
	i       int
	ns      ns.NetNS // nil once leaked
	path    string
	args    string
	result  *current.Result
	host    netlink.Link // host veth right after ADD
	podLink netlink.Link // CNI_IFNAME right after ADD
	leaked  *cnitest.Leaked
}

// newPod creates the sandbox netns of pod i (two sandboxes of the same pod
// share i, hence CNI_ARGS and the deterministic host veth name of tke-eni).
func (e *env) newPod(i int) *pod {
	e.t.Helper()
	p := &pod{i: i, ns: nsutil.NewNS(e.t)}
	p.path = p.ns.Path()
	if e.chain.podArgs != nil {
		p.args = e.chain.podArgs(i)
	}
	cache := cnitest.CacheFile(e.network, p.path, "eth0")
	e.t.Cleanup(func() { _ = os.Remove(cache) })
	return p
}

func (e *env) run(verb string, p *pod) (string, error) {
	return e.cnitool.Run(verb, e.network, p.path, p.args)
}

// add runs ADD and checks the pod got a veth whose peer is the host veth
// named in the result.
func (e *env) add(p *pod) {
	t := e.t
	t.Helper()
	out, err := e.run("add", p)
	if err != nil {
		t.Fatal(err)
	}
	r, err := create.CreateFromBytes([]byte(out))
	if err != nil {
		t.Fatalf("parse cnitool add output %q: %v", out, err)
	}
	if p.result, err = current.NewResultFromResult(r); err != nil {
		t.Fatalf("convert ADD result: %v", err)
	}
	if len(p.result.IPs) == 0 {
		t.Fatalf("ADD result has no IPs: %s", out)
	}

	ph := e.podHandle(p)
	defer ph.Close()
	if p.podLink, err = ph.LinkByName("eth0"); err != nil {
		t.Fatalf("pod eth0 after ADD: %v", err)
	}
	podAddrs, err := ph.AddrList(p.podLink, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("list pod addresses: %v", err)
	}
	for _, ipc := range p.result.IPs {
		if !slices.ContainsFunc(podAddrs, func(a netlink.Addr) bool { return a.IP.Equal(ipc.Address.IP) }) {
			t.Errorf("pod eth0 lacks %s from the ADD result (has %v)", ipc.Address.IP, podAddrs)
		}
	}

	var hostNames []string
	for _, intf := range p.result.Interfaces {
		if intf.Sandbox != "" {
			if intf.Sandbox != p.path {
				t.Errorf("result interface %s has sandbox %q, want %q", intf.Name, intf.Sandbox, p.path)
			}
			continue
		}
		l, err := e.nodeH.LinkByName(intf.Name)
		if err != nil {
			t.Fatalf("host interface %s of the ADD result not on the node: %v", intf.Name, err)
		}
		if l.Type() == "veth" {
			hostNames = append(hostNames, intf.Name)
			p.host = l
		}
	}
	if len(hostNames) != 1 {
		t.Fatalf("want exactly one host veth in the ADD result, got %v (%s)", hostNames, out)
	}
	if p.podLink.Attrs().ParentIndex != p.host.Attrs().Index {
		t.Fatalf("pod eth0 peer ifindex %d is not host veth %s (ifindex %d)",
			p.podLink.Attrs().ParentIndex, p.host.Attrs().Name, p.host.Attrs().Index)
	}
	if mac := hostMAC(p.result, p.host.Attrs().Name); mac != p.host.Attrs().HardwareAddr.String() {
		t.Errorf("host veth %s MAC %s, result says %s", p.host.Attrs().Name, p.host.Attrs().HardwareAddr, mac)
	}
}

func hostMAC(r *current.Result, name string) string {
	for _, intf := range r.Interfaces {
		if intf.Sandbox == "" && intf.Name == name {
			return intf.Mac
		}
	}
	return ""
}

// leak removes the pod's netns path while keeping the netns alive, as the
// kernel bug does, and checks the pod's interface is still there.
func (e *env) leak(p *pod) {
	t := e.t
	t.Helper()
	l, err := cnitest.Leak(p.ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Release)
	p.ns, p.leaked = nil, l
	if _, err := os.Stat(p.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("netns path %s still there after the leak: %v", p.path, err)
	}
	if !e.podHasEth0(p) {
		t.Fatalf("pod eth0 vanished with the path: the netns did not leak")
	}
}

// podHandle is a netlink handle inside the pod netns, live or leaked.
func (e *env) podHandle(p *pod) netlinksafe.Handle {
	e.t.Helper()
	var h netlinksafe.Handle
	var err error
	if p.leaked != nil {
		h, err = p.leaked.Handle()
	} else {
		h, err = netlinksafe.NewHandleAt(netns.NsHandle(p.ns.Fd()))
	}
	if err != nil {
		e.t.Fatalf("netlink handle in pod netns %s: %v", p.path, err)
	}
	return h
}

func (e *env) podHasEth0(p *pod) bool {
	e.t.Helper()
	h := e.podHandle(p)
	defer h.Close()
	l, err := h.LinkByName("eth0")
	return err == nil && l.Attrs().Index == p.podLink.Attrs().Index
}

// linkID is what identifies a node link for "left alone" assertions.
type linkID struct {
	Name, MAC, Type string
}

func (e *env) nodeLinks() map[int]linkID {
	e.t.Helper()
	links, err := e.nodeH.LinkList()
	if err != nil {
		e.t.Fatalf("list node links: %v", err)
	}
	out := map[int]linkID{}
	for _, l := range links {
		a := l.Attrs()
		out[a.Index] = linkID{a.Name, a.HardwareAddr.String(), l.Type()}
	}
	return out
}

// hostVethAlive reports whether the exact host veth of p (ifindex, name, MAC)
// is still on the node.
func (e *env) hostVethAlive(p *pod) bool {
	e.t.Helper()
	id, ok := e.nodeLinks()[p.host.Attrs().Index]
	return ok && id.Name == p.host.Attrs().Name && id.MAC == p.host.Attrs().HardwareAddr.String()
}

// assertOnlyGone checks that the node links are those of before minus gone
// (ifindexes): leakguard took nothing that was not the pod's.
func (e *env) assertOnlyGone(before map[int]linkID, gone ...int) {
	t := e.t
	t.Helper()
	after := e.nodeLinks()
	for idx, id := range before {
		got, ok := after[idx]
		switch {
		case slices.Contains(gone, idx) && ok:
			t.Errorf("node link %d %+v still present, want it gone", idx, id)
		case !slices.Contains(gone, idx) && !ok:
			t.Errorf("node link %d %+v was deleted but is not the pod's", idx, id)
		case !slices.Contains(gone, idx) && got != id:
			t.Errorf("node link %d changed: %+v -> %+v", idx, id, got)
		}
	}
	for idx, id := range after {
		if _, ok := before[idx]; !ok {
			t.Errorf("unexpected new node link %d %+v", idx, id)
		}
	}
}

// podRulesAndRoutes lists, on the node, the ip rules and routes (all tables)
// that mention the pod's address: rules first, then routes.
func (e *env) podRulesAndRoutes(ip net.IP) ([]netlink.Rule, []netlink.Route) {
	var rules []netlink.Rule
	var routes []netlink.Route
	t := e.t
	t.Helper()
	all, err := e.nodeH.RuleList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("list node rules: %v", err)
	}
	for _, r := range all {
		if r.Src != nil && r.Src.IP.Equal(ip) || r.Dst != nil && r.Dst.IP.Equal(ip) {
			rules = append(rules, r)
		}
	}
	rt, err := e.nodeH.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatalf("list node routes: %v", err)
	}
	for _, r := range rt {
		if r.Dst != nil && r.Dst.IP.Equal(ip) {
			routes = append(routes, r)
		}
	}
	return rules, routes
}

func describe[T fmt.Stringer](xs []T) string {
	if len(xs) == 0 {
		return "none"
	}
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, "; ")
}

// records returns the leakguard records (state files) mentioning the pod's
// container ID.
func (e *env) records(p *pod) []string {
	e.t.Helper()
	entries, err := os.ReadDir(e.stateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		e.t.Fatalf("read state dir: %v", err)
	}
	var out []string
	for _, ent := range entries {
		if !ent.Type().IsRegular() || !strings.HasSuffix(ent.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(e.stateDir, ent.Name()))
		if err != nil {
			e.t.Fatalf("read record: %v", err)
		}
		if strings.Contains(string(b), cnitest.ContainerID(p.path)) {
			out = append(out, string(b))
		}
	}
	return out
}

// assertRecorded checks leakguard recorded the pod and its host veth.
func (e *env) assertRecorded(p *pod) {
	e.t.Helper()
	recs := e.records(p)
	if len(recs) != 1 {
		e.t.Fatalf("want 1 leakguard record for %s in %s, got %d", cnitest.ContainerID(p.path), e.stateDir, len(recs))
	}
	if !strings.Contains(recs[0], fmt.Sprintf("%q", p.host.Attrs().Name)) {
		e.t.Errorf("leakguard record does not name host veth %s:\n%s", p.host.Attrs().Name, recs[0])
	}
}
