package guard_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/rescue"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
	"github.com/leakguard/leakguard/test/nsutil"
)

// moveInENI stands in for an ENI: an ifb device (this kernel has no dummy)
// created on the node, moved into the pod as ifname with the host-device
// convention (alias = original host name).
func (f *fixture) moveInENI(hostName, ifname string) net.HardwareAddr {
	f.t.Helper()
	var mac net.HardwareAddr
	inNS(f.t, f.node, func() error {
		if err := netlink.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: hostName}}); err != nil {
			return err
		}
		l, err := netlinksafe.LinkByName(hostName)
		if err != nil {
			return err
		}
		mac = l.Attrs().HardwareAddr
		return netlink.LinkSetNsFd(l, int(f.pod.Fd()))
	})
	inNS(f.t, f.pod, func() error {
		l, err := netlinksafe.LinkByName(hostName)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetName(l, ifname); err != nil {
			return err
		}
		return netlink.LinkSetAlias(l, hostName)
	})
	f.moreIfs = append(f.moreIfs, &current.Interface{Name: ifname, Mac: mac.String(), Sandbox: f.podPath})
	return mac
}

func (f *fixture) pinFixture() string {
	f.plugin.Classify = nsutil.StandInClassifier("ifb") // no spare NIC here: ifb stands in for an ENI
	dir := filepath.Join(f.stateDir, "netns")           // the default layout: the state dir owns its pins
	f.extra = map[string]any{"pinNetns": true}
	// Pinning makes the pin dir a mount point; undo it before TempDir's
	// removal (cleanups run last-registered first).
	f.t.Cleanup(func() {
		for unix.Unmount(dir, unix.MNT_DETACH) == nil { //nolint:revive // peel every stacked mount
		}
	})
	return dir
}

// Pin + rescue: with the runtime's path gone, DEL enters the leaked netns
// through the pin, deletes the pod's veth (and so its host end) and returns
// the ENI stand-in to the host under its original name; the pin is removed.
func TestPinRescuesLeakedNetns(t *testing.T) {
	f := newFixture(t)
	pinDir := f.pinFixture()
	mac := f.moveInENI("lgt-eni7", "eth1")
	f.add("1.1.0")
	r := f.loadRecord()
	if r.Pin == nil || r.Pin.Netns != r.Netns {
		t.Fatalf("record should name a pin of the pod netns: %+v", r.Pin)
	}
	var moved bool
	for _, c := range r.Interfaces {
		if c.Name == "eth1" && c.Moved && c.HostName == "lgt-eni7" {
			moved = true
		}
	}
	if !moved {
		t.Fatalf("eth1 should be recorded as a moved device from lgt-eni7: %+v", r.Interfaces)
	}

	nsutil.LeakBySocket(t, f.pod)
	if err := f.del(f.podPath, "1.1.0", f.prevResult()); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.mustBeGone(f.hostVeth.Name)
	eni := f.nodeLink("lgt-eni7")
	if eni == nil || eni.Attrs().HardwareAddr.String() != mac.String() {
		t.Fatalf("ENI stand-in should be back on the node as lgt-eni7 with MAC %s, got %v", mac, eni)
	}
	if _, err := os.Stat(r.Pin.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin %s should be gone: %v", r.Pin.Path, err)
	}
	if ents, _ := os.ReadDir(pinDir); len(ents) != 0 {
		t.Fatalf("pin dir should be empty: %v", ents)
	}
	if f.loadRecord() != nil {
		t.Fatal("record should be forgotten")
	}
}

// A pin path that now holds another netns is not trusted: nothing inside
// that netns is touched, the host side is still reaped by identity.
func TestReplacedPinIsNotEntered(t *testing.T) {
	f := newFixture(t)
	f.pinFixture()
	f.add("1.1.0")
	r := f.loadRecord()
	nsutil.LeakBySocket(t, f.pod)

	other := nsutil.NewNS(t)
	otherHost, otherCont := f.attach(other, "")
	if err := unix.Unmount(r.Pin.Path, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(other.Path(), r.Pin.Path, "none", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.RemovePath(r.Pin.Path) })

	if err := f.del(f.podPath, "1.1.0", f.prevResult()); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.mustBeGone(f.hostVeth.Name)
	f.mustExist(otherHost.Name, otherHost.Index)
	inNS(t, other, func() error {
		l, err := netlinksafe.LinkByName("eth0")
		if err != nil || l.Attrs().Index != otherCont.Index {
			t.Errorf("the other netns' eth0 must be untouched: %v %v", l, err)
		}
		return nil
	})
	if _, err := os.Stat(r.Pin.Path); err != nil {
		t.Fatalf("a pin holding a foreign netns must be left in place: %v", err)
	}
}

// A pin never outlives DEL: with the netns alive, DEL removes the pin too.
func TestPinRemovedOnDelAlive(t *testing.T) {
	f := newFixture(t)
	f.pinFixture()
	f.add("1.1.0")
	r := f.loadRecord()
	if err := f.del(f.podPath, "1.1.0", f.prevResult()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.Pin.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin should be removed at DEL: %v", err)
	}
	f.mustExist(f.hostVeth.Name, f.hostVeth.Index)
}

// A device of a "movable" kind created inside the pod is still virtual for
// the production classifier: rescue deletes it, it never lands on the host.
func TestRescueNeverMovesPodCreatedDevicesToHost(t *testing.T) {
	f := newFixture(t)
	f.pinFixture()
	f.plugin.Classify = rescue.Classify
	inNS(t, f.pod, func() error {
		return netlink.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "net1"}})
	})
	f.moreIfs = append(f.moreIfs, &current.Interface{Name: "net1", Sandbox: f.podPath})
	f.add("1.1.0")
	nsutil.LeakBySocket(t, f.pod)
	if err := f.del(f.podPath, "1.1.0", f.prevResult()); err != nil {
		t.Fatal(err)
	}
	if l := f.nodeLink("net1"); l != nil {
		t.Fatalf("a device created in the pod was moved onto the host: %v", l.Attrs().Name)
	}
	f.mustBeGone(f.hostVeth.Name)
}

// A pin without a usable record (the record turned corrupt, or ADD died
// between pinning and saving) is removed by DEL all the same.
func TestDelRemovesPinWithoutRecord(t *testing.T) {
	t.Run("corrupt record", func(t *testing.T) {
		f := newFixture(t)
		f.pinFixture()
		f.add("1.1.0")
		pin := f.loadRecord().Pin
		files := recordFiles(t, f.stateDir)
		if err := os.WriteFile(files[0], []byte("{garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := f.del(f.podPath, "1.1.0", f.prevResult()); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(pin.Path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("pin %s must not outlive DEL: %v", pin.Path, err)
		}
	})
	t.Run("ADD died after pinning", func(t *testing.T) {
		f := newFixture(t)
		dir := f.pinFixture()
		key := record.Key{Network: netName, ContainerID: f.cid, IfName: "eth0"}
		pin, err := nspin.New(f.podPath, dir, key.Name())
		if err != nil {
			t.Fatal(err)
		}
		nsutil.LeakBySocket(t, f.pod)
		if err := f.del(f.podPath, "1.1.0", f.prevResult()); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(pin.Path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("orphan pin %s must be removed by DEL: %v", pin.Path, err)
		}
	})
}

// GC removes a pin no record names (under the attachment's lock) and keeps
// the pins of live records.
func TestGCRemovesOrphanPins(t *testing.T) {
	f := newFixture(t)
	dir := f.pinFixture()
	f.add("1.1.0")
	live := f.loadRecord().Pin
	g := f.sibling()
	orphan, err := nspin.New(g.podPath, dir, record.Key{Network: netName, ContainerID: g.cid, IfName: "eth0"}.Name())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.gc(map[string]any{"cni.dev/valid-attachments": []map[string]string{{"containerID": f.cid, "ifname": "eth0"}}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if _, err := os.Stat(orphan.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("orphan pin should be removed: %v", err)
	}
	if _, err := os.Stat(live.Path); err != nil {
		t.Fatalf("a live record's pin must stay: %v", err)
	}
}

// A pin dir outside the state dir may be shared by several state dirs: GC
// cannot see their records, so it leaves stray pins there to their DELs.
func TestGCLeavesPinsOfASharedPinDir(t *testing.T) {
	f := newFixture(t)
	f.pinFixture()
	shared := filepath.Join(t.TempDir(), "shared-pins")
	t.Cleanup(func() {
		for unix.Unmount(shared, unix.MNT_DETACH) == nil { //nolint:revive // peel every stacked mount
		}
	})
	f.extra = map[string]any{"pinNetns": true, "pinDir": shared}
	g := f.sibling()
	g.stateDir = filepath.Join(t.TempDir(), "other-state") // another conflist's state dir
	g.add("1.1.0")
	pin := g.loadRecord().Pin
	if err := f.gc(map[string]any{"cni.dev/valid-attachments": []any{}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if _, err := os.Stat(pin.Path); err != nil {
		t.Fatalf("GC of one state dir removed another state dir's pin: %v", err)
	}
}

// A pin dir owned by another uid is refused at ADD, as DEL and GC would
// refuse to remove pins from it: otherwise the netns stays pinned forever
// and every GC fails. Nothing is pinned or recorded, and GC stays clean.
func TestAddRefusesForeignPinDir(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), "pins")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 4321, 4321); err != nil {
		t.Fatal(err)
	}
	f.extra = map[string]any{"pinNetns": true, "pinDir": dir}
	_, err := f.tryAdd(f.args(f.podPath, f.conf("1.1.0", f.prevResult(), nil)))
	if err == nil || !strings.Contains(err.Error(), "owned by uid 4321") {
		t.Fatalf("ADD with a foreign pin dir = %v; want refused naming the owner", err)
	}
	if r := f.loadRecord(); r != nil {
		t.Fatalf("refused ADD left a record: %+v", r)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("refused ADD left pins: %v", ents)
	}
	if err := f.gc(nil); err != nil {
		t.Fatalf("GC after a refused ADD: %v", err)
	}
}
