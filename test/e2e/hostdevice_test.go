package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/vishvananda/netlink"
)

// standInDev is the node device host-device moves into the pod. There is no
// spare NIC here and the kernel has no dummy driver: an ifb device stands in
// (host-device takes any device by name; its DEL moves it back by the alias
// it set, whatever the kind).
const standInDev = "lgt-hd0"

// hostDeviceConf writes a host-device network moving standInDev into the pod
// as eth0: wrapped (leakguard with host-device as its delegate) or chained
// (host-device, then leakguard). There is no conf/ example: the device name
// is the node's.
func hostDeviceConf(t *testing.T, wrapped bool) string {
	t.Helper()
	hd := map[string]any{"type": "host-device", "device": standInDev}
	lg := map[string]any{"type": "leakguard", "stateDir": "/run/leakguard"}
	var conf map[string]any
	file := "10-host-device-leakguard.conflist"
	if wrapped {
		lg["delegate"] = hd
		conf, file = lg, "10-host-device-wrapped.conf"
	} else {
		conf = map[string]any{"plugins": []any{hd, lg}}
	}
	conf["cniVersion"], conf["name"] = "1.1.0", strings.TrimSuffix(strings.TrimPrefix(file, "10-"), filepath.Ext(file))
	raw, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), file)
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// addStandIn creates the stand-in device on the node and returns its MAC.
func (e *env) addStandIn() string {
	e.t.Helper()
	if err := e.nodeH.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: standInDev}}); err != nil {
		e.t.Fatalf("create %s on the node: %v", standInDev, err)
	}
	l, err := e.nodeH.LinkByName(standInDev)
	if err != nil {
		e.t.Fatal(err)
	}
	return l.Attrs().HardwareAddr.String()
}

// addDevice runs ADD and checks host-device moved the stand-in into the pod
// as eth0, saving its host name in the alias.
func (e *env) addDevice(p *pod, mac string) {
	t := e.t
	t.Helper()
	out, err := e.run("add", p)
	if err != nil {
		t.Fatal(err)
	}
	r, err := create.CreateFromBytes([]byte(out))
	if err != nil {
		t.Fatalf("parse ADD result %q: %v", out, err)
	}
	if p.result, err = current.NewResultFromResult(r); err != nil {
		t.Fatal(err)
	}
	if len(p.result.Interfaces) != 1 || p.result.Interfaces[0].Name != "eth0" || p.result.Interfaces[0].Sandbox != p.path {
		t.Fatalf("want host-device's eth0 in %s, got %s", p.path, out)
	}
	ph := e.podHandle(p)
	defer ph.Close()
	if p.podLink, err = ph.LinkByName("eth0"); err != nil {
		t.Fatalf("pod eth0 after ADD: %v", err)
	}
	if a := p.podLink.Attrs(); a.HardwareAddr.String() != mac || a.Alias != standInDev {
		t.Fatalf("pod eth0 is not the stand-in: MAC %s (want %s), alias %q", a.HardwareAddr, mac, a.Alias)
	}
	if _, err := e.nodeH.LinkByName(standInDev); err == nil {
		t.Fatalf("%s still on the node after ADD", standInDev)
	}
	if recs := e.records(p); len(recs) != 1 || !strings.Contains(recs[0], `"eth0"`) {
		t.Fatalf("want one leakguard record naming eth0, got %v", recs)
	}
}

// assertDeviceHome checks the stand-in is back on the node under its name,
// with its MAC and no alias left: host-device's own moveLinkOut.
func (e *env) assertDeviceHome(mac string) {
	e.t.Helper()
	l, err := e.nodeH.LinkByName(standInDev)
	if err != nil {
		e.t.Fatalf("%s not back on the node: %v", standInDev, err)
	}
	if a := l.Attrs(); a.HardwareAddr.String() != mac || a.Alias != "" || l.Type() != "ifb" {
		e.t.Errorf("%s on the node: MAC %s (want %s), alias %q, kind %s", standInDev, a.HardwareAddr, mac, a.Alias, l.Type())
	}
}

// TestWrappedHostDevice: the reference host-device plugin wrapped, its netns
// leaked. With a pin, host-device's own DEL gets the pin and moves the device
// back to the node under its name. (leakguard's rescue would have deleted
// the stand-in, not moved it: an ifb has a link kind, so that the device is
// back proves host-device moved it.) Without a pin host-device gets no
// netns and does nothing: DEL succeeds, and the device stays stranded in the
// leaked netns, where nothing can reach it.
func TestWrappedHostDevice(t *testing.T) {
	for _, pinned := range []bool{true, false} {
		t.Run(fmt.Sprintf("pin=%v", pinned), func(t *testing.T) {
			c := chain{name: "host-device", file: hostDeviceConf(t, true)}
			e := newEnvWith(t, c, envOptions{pin: boolPtr(pinned)})
			mac := e.addStandIn()
			p := e.newPod(0)
			e.addDevice(p, mac)
			if pinned {
				e.assertPinned(p)
			}
			e.leak(p)
			runs := len(e.logged(p, "main plugin's DEL done"))
			if _, err := e.run("del", p); err != nil {
				t.Fatalf("DEL with the netns path gone: %v", err)
			}
			if !pinned {
				e.assertDelegateDel(p, runs, "")
				if !e.podHasEth0(p) {
					t.Fatalf("without a pin the device left the leaked netns: README's table is wrong")
				}
				if _, err := e.nodeH.LinkByName(standInDev); err == nil {
					t.Fatalf("without a pin %s is back on the node: README's table is wrong", standInDev)
				}
				t.Logf("without a pin, %s stays in the leaked netns as eth0 (expected)", standInDev)
				return
			}
			e.assertDelegateDel(p, runs, e.pinPath(p))
			e.assertDeviceHome(mac)
			if e.podHasEth0(p) {
				t.Errorf("eth0 still in the leaked netns")
			}
			if left := e.stateFiles(p); len(left) != 0 {
				t.Errorf("state left: %v", left)
			}
			if left := e.pinsLeft(); len(left) != 0 {
				t.Errorf("pins left: %v", left)
			}
			if _, err := e.run("del", p); err != nil {
				t.Errorf("repeated DEL: %v", err)
			}
			e.assertDeviceHome(mac)
		})
	}
}

// TestWrappedHostDeviceAlive: the normal lifecycle, netns alive at DEL:
// host-device's own DEL, run by the wrapper with the runtime's netns, moves
// the device back; leakguard keeps no record or pin.
func TestWrappedHostDeviceAlive(t *testing.T) {
	c := chain{name: "host-device", file: hostDeviceConf(t, true)}
	e := newEnvWith(t, c, envOptions{pin: boolPtr(true)})
	mac := e.addStandIn()
	p := e.newPod(0)
	e.addDevice(p, mac)
	e.assertPinned(p)
	if _, err := e.run("check", p); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	runs := len(e.logged(p, "main plugin's DEL done"))
	if _, err := e.run("del", p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	e.assertDelegateDel(p, runs, p.path)
	e.assertDeviceHome(mac)
	if e.podHasEth0(p) {
		t.Errorf("eth0 still in the pod netns")
	}
	if left := e.stateFiles(p); len(left) != 0 {
		t.Errorf("state left: %v", left)
	}
	if left := e.pinsLeft(); len(left) != 0 {
		t.Errorf("pins left: %v", left)
	}
}

// TestChainedHostDevice documents chained mode with host-device when the
// netns path is gone: host-device's DEL fails when it cannot open CNI_NETNS
// (it tolerates only an empty one), so the whole DEL fails on every retry,
// with or without leakguard's pin. Without a pin the device also stays
// stranded in the leaked netns.
func TestChainedHostDevice(t *testing.T) {
	for _, pinned := range []bool{true, false} {
		t.Run(fmt.Sprintf("pin=%v", pinned), func(t *testing.T) {
			c := chain{name: "host-device", file: hostDeviceConf(t, false)}
			e := newEnvWith(t, c, envOptions{pin: boolPtr(pinned)})
			mac := e.addStandIn()
			p := e.newPod(0)
			e.addDevice(p, mac)
			e.leak(p)
			for try := range 2 {
				_, err := e.run("del", p)
				if err == nil || !strings.Contains(err.Error(), `type="host-device"`) {
					t.Fatalf("DEL %d: want host-device's own failure, got %v", try, err)
				}
				t.Logf("DEL %d: %v", try, err)
			}
			if !pinned && !e.podHasEth0(p) {
				t.Errorf("without a pin the device left the leaked netns")
			}
			// With the pin, leakguard's DEL (first in the chain) rescued the
			// netns from the inside: a kind-less device (a real ENI) goes back
			// to the node (pkg/cniplugin/guard's pin tests), but the ifb
			// stand-in has a kind and is deleted, so it is not asserted here.
		})
	}
}
