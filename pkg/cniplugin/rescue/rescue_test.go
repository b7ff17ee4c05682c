package rescue_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/rescue"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
	"github.com/leakguard/leakguard/test/nsutil"
)

// do runs f in n and fails the test on error.
func do(t *testing.T, n ns.NetNS, f func() error) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}

// linkState is what "nothing else changed" compares.
type linkState struct {
	Name, MAC, Kind, Alias string
	Index                  int
	Flags                  net.Flags
}

// snapshot lists the links of n by name.
func snapshot(t *testing.T, n ns.NetNS) map[string]linkState {
	t.Helper()
	out := map[string]linkState{}
	do(t, n, func() error {
		links, err := netlinksafe.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			a := l.Attrs()
			out[a.Name] = linkState{a.Name, a.HardwareAddr.String(), l.Type(), a.Alias, a.Index, a.Flags}
		}
		return nil
	})
	return out
}

// moveIn moves node link hostName into pod as podName with the host name in
// its alias, as host-device does, and brings it up.
func moveIn(t *testing.T, node, pod ns.NetNS, hostName, podName string) {
	t.Helper()
	do(t, node, func() error {
		l, err := netlinksafe.LinkByName(hostName)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetAlias(l, hostName); err != nil {
			return err
		}
		return netlink.LinkSetNsFd(l, int(pod.Fd()))
	})
	do(t, pod, func() error {
		l, err := netlinksafe.LinkByName(hostName)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetName(l, podName); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
}

// record reads container interfaces inside pod the way ADD does: identity
// plus Classify.
func record(t *testing.T, pod ns.NetNS, names ...string) []podlink.ContainerIface {
	t.Helper()
	var out []podlink.ContainerIface
	do(t, pod, func() error {
		for _, name := range names {
			l, err := netlinksafe.LinkByName(name)
			if err != nil {
				return err
			}
			a := l.Attrs()
			moved, hostName := ifbStandsIn(l) // ifb stands in for an ENI here
			out = append(out, podlink.ContainerIface{
				Name: a.Name, Index: a.Index, MAC: a.HardwareAddr.String(), Kind: l.Type(),
				Moved: moved, HostName: hostName,
			})
		}
		return nil
	})
	return out
}

func addIfb(name string) error {
	return netlink.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name}})
}

// leakThroughPin pins pod, removes its runtime path and closes it, and
// returns the netns opened through the pin: the DEL situation.
func leakThroughPin(t *testing.T, pod ns.NetNS) ns.NetNS {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "netns")
	t.Cleanup(func() {
		for range 8 {
			if unix.Unmount(dir, unix.MNT_DETACH) != nil {
				return
			}
		}
	})
	pin, err := nspin.New(pod.Path(), dir, "pod")
	if err != nil {
		t.Fatalf("pin: %v", err)
	}
	_ = pod.Close()
	if err := nsutil.RemovePath(pod.Path()); err != nil {
		t.Fatal(err)
	}
	n, err := nspin.Open(pin)
	if err != nil {
		t.Fatalf("open pin: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func flagFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "use-gss-proxy")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRescueDeletesVirtualAndReturnsMovedDevices(t *testing.T) {
	node := nsutil.NewNS(t)
	pod := nsutil.NewNS(t)
	do(t, node, func() error {
		veth := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: "lgvh0"}, PeerName: "eth0",
			PeerNamespace: netlink.NsFd(int(pod.Fd())),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		bystander := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "bystand0"}, PeerName: "bystand1"}
		if err := netlink.LinkAdd(bystander); err != nil {
			return fmt.Errorf("add bystander veth: %w", err)
		}
		for _, name := range []string{"eni6", "eni7", "eni8", "eni9"} {
			if err := addIfb(name); err != nil {
				return fmt.Errorf("add ifb %s: %w", name, err)
			}
		}
		return nil
	})
	eni7MAC := snapshot(t, node)["eni7"].MAC
	moveIn(t, node, pod, "eni7", "eth1")
	moveIn(t, node, pod, "eni8", "eth2")
	moveIn(t, node, pod, "eni6", "eth3")

	ifaces := record(t, pod, "eth0", "eth1", "eth2", "eth3")
	wantClass := []struct {
		moved bool
		host  string
	}{{false, ""}, {true, "eni7"}, {true, "eni8"}, {true, "eni6"}}
	for i, c := range ifaces {
		if c.Moved != wantClass[i].moved || c.HostName != wantClass[i].host {
			t.Fatalf("Classify(%s) = %v %q; want %v %q", c.Name, c.Moved, c.HostName, wantClass[i].moved, wantClass[i].host)
		}
	}
	// eth2's MAC differs from the record (ifb cannot change its MAC, so the
	// record is what differs): it is not the recorded device any more.
	eth2MAC := ifaces[2].MAC
	ifaces[2].MAC = "02:00:00:00:00:42"
	// eth3 was renamed in the pod after ADD.
	do(t, pod, func() error {
		l, err := netlinksafe.LinkByName("eth3")
		if err != nil {
			return err
		}
		return netlink.LinkSetName(l, "eth9")
	})

	before := snapshot(t, node)
	podNS := leakThroughPin(t, pod)

	var rep rescue.Report
	do(t, node, func() error {
		var err error
		rep, err = rescue.Rescue(podNS, ifaces, rescue.Options{GSSFlagPath: flagFile(t, "1\n")})
		return err
	})

	if len(rep.Deleted) != 1 || rep.Deleted[0].Name != "eth0" {
		t.Errorf("Deleted = %+v; want eth0", rep.Deleted)
	}
	if len(rep.Returned) != 1 || rep.Returned[0].Name != "eni7" || !rep.Returned[0].Renamed || rep.Returned[0].Iface.Name != "eth1" {
		t.Errorf("Returned = %+v; want eth1 back as eni7", rep.Returned)
	}
	if len(rep.Skipped) != 2 || !strings.Contains(rep.Skipped[0], "eth2") || !strings.Contains(rep.Skipped[0], "MAC") ||
		!strings.Contains(rep.Skipped[1], "eth3") || !strings.Contains(rep.Skipped[1], `name "eth9"`) {
		t.Errorf("Skipped = %q; want eth2 for its MAC, eth3 for its name", rep.Skipped)
	}
	if !rep.GSSProxyArmed || rep.GSSProxy != rescue.GSSArmed {
		t.Errorf("gss-proxy = %q armed %v; want armed", rep.GSSProxy, rep.GSSProxyArmed)
	}

	after := snapshot(t, node)
	if _, ok := after["lgvh0"]; ok {
		t.Errorf("host end lgvh0 survived the rescue")
	}
	eni7, ok := after["eni7"]
	if !ok {
		t.Fatalf("eni7 is not back in the node netns: %v", after)
	}
	if eni7.MAC != eni7MAC || eni7.Kind != "ifb" || eni7.Alias != "" || rep.Returned[0].Index != eni7.Index {
		t.Errorf("eni7 on the node = %+v; want ifb %s without alias at ifindex %d", eni7, eni7MAC, rep.Returned[0].Index)
	}
	delete(before, "lgvh0")
	delete(after, "eni7")
	if !reflect.DeepEqual(before, after) {
		t.Errorf("other node links changed:\nbefore %v\nafter  %v", before, after)
	}

	inPod := snapshot(t, podNS)
	names := make([]string, 0, len(inPod))
	for n := range inPod {
		names = append(names, n)
	}
	sort.Strings(names)
	if !reflect.DeepEqual(names, []string{"eth2", "eth9", "lo"}) || inPod["eth2"].MAC != eth2MAC {
		t.Errorf("pod netns after rescue holds %v; want lo and the mismatching eth2 and eth9 left alone", inPod)
	}

	// A second rescue finds nothing left to do and fails nothing.
	do(t, node, func() error {
		rep, err := rescue.Rescue(podNS, ifaces, rescue.Options{GSSFlagPath: flagFile(t, "0")})
		if err != nil {
			return err
		}
		if len(rep.Deleted)+len(rep.Returned) != 0 || len(rep.Gone) != 2 || len(rep.Skipped) != 2 || rep.GSSProxy != rescue.GSSOff || rep.GSSProxyArmed {
			t.Errorf("second rescue = %+v; want 2 gone, 2 skipped, gss off", rep)
		}
		return nil
	})
}

func TestRescueKeepsTemporaryNameWhenHostNameTaken(t *testing.T) {
	node := nsutil.NewNS(t)
	pod := nsutil.NewNS(t)
	do(t, node, func() error { return addIfb("eni7") })
	mac := snapshot(t, node)["eni7"].MAC
	moveIn(t, node, pod, "eni7", "eth1")
	ifaces := record(t, pod, "eth1")
	do(t, node, func() error { return addIfb("eni7") }) // the name is reused meanwhile
	before := snapshot(t, node)

	var rep rescue.Report
	do(t, node, func() error {
		var err error
		rep, err = rescue.Rescue(pod, ifaces, rescue.Options{GSSFlagPath: flagFile(t, "0")})
		return err
	})
	if len(rep.Returned) != 1 {
		t.Fatalf("Returned = %+v; want one device", rep.Returned)
	}
	r := rep.Returned[0]
	if r.Renamed || !strings.HasPrefix(r.Name, "lgr") || len(r.Name) > 15 || !strings.Contains(r.Reason, "taken") {
		t.Errorf("Returned = %+v; want a temporary lgr name and the reason", r)
	}
	after := snapshot(t, node)
	if got := after[r.Name]; got.MAC != mac || got.Kind != "ifb" {
		t.Errorf("%s on the node = %+v; want the moved device %s", r.Name, got, mac)
	}
	if after["eni7"] != before["eni7"] {
		t.Errorf("the host's own eni7 changed: %+v -> %+v", before["eni7"], after["eni7"])
	}
}

func TestRescueRefusesTheHostNetns(t *testing.T) {
	node := nsutil.NewNS(t)
	do(t, node, func() error { return addIfb("eni7") })
	ifaces := record(t, node, "eni7")
	before := snapshot(t, node)
	do(t, node, func() error {
		_, err := rescue.Rescue(node, ifaces, rescue.Options{})
		if err == nil || !strings.Contains(err.Error(), "caller's own netns") {
			t.Errorf("Rescue of the caller's netns = %v; want a refusal", err)
		}
		return nil
	})
	if after := snapshot(t, node); !reflect.DeepEqual(before, after) {
		t.Errorf("node links changed: %v -> %v", before, after)
	}
}

// The flag is read from a thread inside the pod netns: a per-netns proc file
// set to 1 only in the pod reads 1.
func TestGSSFlagIsReadInsidePodNetns(t *testing.T) {
	node := nsutil.NewNS(t)
	pod := nsutil.NewNS(t)
	const forward = "/proc/sys/net/ipv4/ip_forward"
	do(t, node, func() error { return os.WriteFile(forward, []byte("0"), 0o644) })
	do(t, pod, func() error { return os.WriteFile(forward, []byte("1"), 0o644) })
	do(t, node, func() error {
		rep, err := rescue.Rescue(pod, nil, rescue.Options{GSSFlagPath: forward})
		if err != nil || !rep.GSSProxyArmed {
			t.Errorf("per-netns flag read = %+v, %v; want the pod's value (armed)", rep, err)
		}
		return nil
	})
}

func TestGSSFlagStates(t *testing.T) {
	node := nsutil.NewNS(t)
	pod := nsutil.NewNS(t)
	// The real path: on kernels without auth_rpcgss there is no flag file;
	// with it, a fresh netns was never armed.
	want := rescue.GSSUnavailable
	if _, err := os.Stat(rescue.DefaultGSSFlagPath); err == nil {
		want = rescue.GSSOff
	}
	cases := []struct {
		name, path, want string
		armed, fails     bool
	}{
		{"default path", "", want, false, false},
		{"armed", flagFile(t, "1\n"), rescue.GSSArmed, true, false},
		{"off", flagFile(t, "0\n"), rescue.GSSOff, false, false},
		{"never written", flagFile(t, "-1\n"), rescue.GSSOff, false, false},
		{"missing", filepath.Join(t.TempDir(), "nope"), rescue.GSSUnavailable, false, false},
		{"garbage", flagFile(t, "yes"), rescue.GSSUnknown, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			do(t, node, func() error {
				rep, err := rescue.Rescue(pod, nil, rescue.Options{GSSFlagPath: c.path})
				if (err != nil) != c.fails || rep.GSSProxy != c.want || rep.GSSProxyArmed != c.armed {
					t.Errorf("Rescue = %q armed %v, err %v; want %q armed %v, fails %v", rep.GSSProxy, rep.GSSProxyArmed, err, c.want, c.armed, c.fails)
				}
				return nil
			})
		})
	}
	if _, err := os.Stat("/proc/net/rpc"); errors.Is(err, os.ErrNotExist) && want != rescue.GSSUnavailable {
		t.Errorf("no /proc/net/rpc on this kernel, yet the flag file exists")
	}
}

func TestClassify(t *testing.T) {
	mk := func(l netlink.Link, name, alias string) netlink.Link {
		a := l.Attrs()
		a.Name, a.Alias = name, alias
		return l
	}
	cases := []struct {
		link  netlink.Link
		moved bool
		host  string
	}{
		{mk(&netlink.Device{}, "eth1", "ens5"), true, "ens5"},
		{mk(&netlink.Device{}, "eth1", ""), true, "eth1"},
		{mk(&netlink.Ifb{}, "eth1", "eni7"), false, ""},
		{mk(&netlink.Dummy{}, "eth1", ""), false, ""},
		{mk(&netlink.Veth{}, "eth0", "x"), false, ""},
		{mk(&netlink.Macvlan{}, "eth0", ""), false, ""},
		{mk(&netlink.Macvtap{}, "eth0", ""), false, ""},
		{mk(&netlink.IPVlan{}, "eth0", ""), false, ""},
		{mk(&netlink.IPVtap{}, "eth0", ""), false, ""},
		{mk(&netlink.Vlan{}, "eth0", ""), false, ""},
		{mk(&netlink.Vxlan{}, "eth0", ""), false, ""},
		{mk(&netlink.Bridge{}, "eth0", ""), false, ""},
		{mk(&netlink.Tuntap{}, "tap0", ""), false, ""},
		{mk(&netlink.GenericLink{LinkType: "wireguard"}, "wg0", ""), false, ""},
	}
	for _, c := range cases {
		moved, host := rescue.Classify(c.link)
		if moved != c.moved || host != c.host {
			t.Errorf("Classify(%s %s) = %v %q; want %v %q", c.link.Type(), c.link.Attrs().Name, moved, host, c.moved, c.host)
		}
	}
	// The test classifier adds stand-ins and nothing else.
	if moved, host := ifbStandsIn(mk(&netlink.Ifb{}, "eth1", "eni7")); !moved || host != "eni7" {
		t.Errorf("stand-in ifb = %v %q", moved, host)
	}
	if moved, _ := ifbStandsIn(mk(&netlink.Veth{}, "eth0", "")); moved {
		t.Error("the stand-in classifier must keep veths virtual")
	}
}

var ifbStandsIn = nsutil.StandInClassifier("ifb")
