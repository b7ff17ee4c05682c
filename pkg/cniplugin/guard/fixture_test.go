package guard_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/guard"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/test/nsutil"
)

const netName = "lg-test"

// fixture is one "node" (a throw-away netns playing the host) with a pod
// attached the way a ptp-style main plugin does it: a veth whose host end
// stays on the node and whose peer is eth0 in the pod netns.
type fixture struct {
	t        *testing.T
	node     ns.NetNS
	pod      ns.NetNS
	podPath  string
	stateDir string
	plugin   *guard.Plugin
	hostVeth net.Interface
	contVeth net.Interface
	cid      string
	extra    map[string]any       // merged into every config
	moreIfs  []*current.Interface // added to prevResult
}

func newFixture(t *testing.T) *fixture { return newFixtureWithHost(t, "") }

// newFixtureWithHost names the host veth (random when empty), as plugins with
// deterministic per-pod names do.
func newFixtureWithHost(t *testing.T, hostName string) *fixture {
	t.Helper()
	f := &fixture{
		t:        t,
		node:     nsutil.NewNS(t),
		stateDir: filepath.Join(t.TempDir(), "state"),
		plugin:   guard.New(io.Discard),
		cid:      fmt.Sprintf("ctr-%d", time.Now().UnixNano()),
	}
	f.plugin.LockTimeout = 2 * time.Second
	f.pod = nsutil.NewNS(t)
	f.podPath = f.pod.Path()
	f.hostVeth, f.contVeth = f.attach(f.pod, hostName)
	return f
}

// sibling is another pod on the same node, sharing the state dir.
func (f *fixture) sibling() *fixture {
	f.t.Helper()
	g := *f
	g.cid = fmt.Sprintf("ctr-%d", time.Now().UnixNano())
	g.pod = nsutil.NewNS(f.t)
	g.podPath = g.pod.Path()
	g.hostVeth, g.contVeth = g.attach(g.pod, "")
	return &g
}

// attach wires eth0 in pod to a host veth named hostName (random if empty).
func (f *fixture) attach(pod ns.NetNS, hostName string) (net.Interface, net.Interface) {
	f.t.Helper()
	var host, cont net.Interface
	err := pod.Do(func(ns.NetNS) error {
		var err error
		if hostName == "" {
			host, cont, err = ip.SetupVeth("eth0", 1500, "", f.node)
		} else {
			host, cont, err = ip.SetupVethWithName("eth0", hostName, 1500, "", f.node)
		}
		return err
	})
	if err != nil {
		f.t.Fatalf("set up veth: %v", err)
	}
	return host, cont
}

func (f *fixture) prevResult() *current.Result {
	_, ipn, _ := net.ParseCIDR("10.99.0.7/24")
	ipn.IP = net.ParseIP("10.99.0.7")
	idx := 1
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: f.hostVeth.Name, Mac: f.hostVeth.HardwareAddr.String()},
			{Name: f.contVeth.Name, Mac: f.contVeth.HardwareAddr.String(), Sandbox: f.podPath},
		},
		IPs: []*current.IPConfig{{Interface: &idx, Address: *ipn, Gateway: net.ParseIP("10.99.0.1")}},
	}
	r.Interfaces = append(r.Interfaces, f.moreIfs...)
	return r
}

// conf renders leakguard's network config in cniVersion v with prevResult
// converted to v (as libcni does). prev may be nil (DEL below 0.4.0).
func (f *fixture) conf(v string, prev types.Result, extra map[string]any) []byte {
	f.t.Helper()
	m := map[string]any{"cniVersion": v, "name": netName, "type": "leakguard", "stateDir": f.stateDir}
	if prev != nil {
		r, err := prev.GetAsVersion(v)
		if err != nil {
			f.t.Fatalf("convert prevResult to %s: %v", v, err)
		}
		raw, err := json.Marshal(r)
		if err != nil {
			f.t.Fatal(err)
		}
		m["prevResult"] = json.RawMessage(raw)
	}
	for k, val := range f.extra {
		m[k] = val
	}
	for k, val := range extra {
		m[k] = val
	}
	b, err := json.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func (f *fixture) args(netns string, conf []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: f.cid, Netns: netns, IfName: "eth0", StdinData: conf}
}

// add runs ADD in the node netns and returns the printed result bytes.
func (f *fixture) add(v string) []byte {
	f.t.Helper()
	out, err := f.tryAdd(f.args(f.podPath, f.conf(v, f.prevResult(), nil)))
	if err != nil {
		f.t.Fatalf("ADD (%s): %v", v, err)
	}
	return out
}

func (f *fixture) tryAdd(a *skel.CmdArgs) ([]byte, error) {
	var out []byte
	err := f.node.Do(func(ns.NetNS) error {
		var err error
		_, out, err = testutils.CmdAddWithArgs(a, func() error { return f.plugin.Add(a) })
		return err
	})
	return out, err
}

func (f *fixture) del(netns, v string, prev types.Result) error {
	a := f.args(netns, f.conf(v, prev, nil))
	return f.node.Do(func(ns.NetNS) error {
		return testutils.CmdDelWithArgs(a, func() error { return f.plugin.Del(a) })
	})
}

func (f *fixture) check(v string) error {
	a := f.args(f.podPath, f.conf(v, f.prevResult(), nil))
	return f.node.Do(func(ns.NetNS) error {
		return testutils.CmdCheckWithArgs(a, func() error { return f.plugin.Check(a) })
	})
}

func (f *fixture) key() record.Key {
	return record.Key{Network: netName, ContainerID: f.cid, IfName: "eth0"}
}

// loadRecord reads the attachment's record straight from the store.
func (f *fixture) loadRecord() *record.Record {
	f.t.Helper()
	st, err := store.Open(f.stateDir)
	if err != nil {
		f.t.Fatal(err)
	}
	r, err := st.Load(f.key())
	if err != nil {
		f.t.Fatalf("load record: %v", err)
	}
	return r
}

func (f *fixture) saveRecord(r *record.Record) {
	f.t.Helper()
	st, err := store.Open(f.stateDir)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := st.Save(r); err != nil {
		f.t.Fatal(err)
	}
}

// nodeLink looks a link up by name in the node netns; nil if absent.
func (f *fixture) nodeLink(name string) netlink.Link {
	f.t.Helper()
	var l netlink.Link
	err := f.node.Do(func(ns.NetNS) error {
		var err error
		l, err = netlinksafe.LinkByName(name)
		return err
	})
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		f.t.Fatalf("look up %s in node netns: %v", name, err)
	}
	return l
}

// mustExist / mustBeGone assert the host side by name and ifindex.
func (f *fixture) mustExist(name string, index int) {
	f.t.Helper()
	l := f.nodeLink(name)
	if l == nil || l.Attrs().Index != index {
		f.t.Fatalf("host link %s (ifindex %d) should still exist, got %v", name, index, l)
	}
}

func (f *fixture) mustBeGone(name string) {
	f.t.Helper()
	if l := f.nodeLink(name); l != nil {
		f.t.Fatalf("host link %s should be gone, still there (ifindex %d)", name, l.Attrs().Index)
	}
}

// inNS runs fn in n and fails the test on error.
func inNS(t *testing.T, n ns.NetNS, fn func() error) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return fn() }); err != nil {
		t.Fatal(err)
	}
}

func mustRemovedFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s should not exist (err=%v)", path, err)
	}
}

// prevOrNil keeps a typed nil *current.Result from becoming a non-nil
// types.Result interface.
func prevOrNil(r *current.Result) types.Result {
	if r == nil {
		return nil
	}
	return r
}
