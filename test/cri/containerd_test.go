package cri

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	rt "github.com/leakguard/leakguard/test/runtime"
	"github.com/leakguard/leakguard/test/runtime/cnicall"
)

// containerd starts a private containerd whose pod network is the bridge
// chain, cniVersion 1.1.0, with leakguard after bridge or without it (the
// control).
func containerd(t *testing.T, withLeakguard bool) (*rt.Network, *rt.CNI, *rt.Containerd) {
	t.Helper()
	net := rt.NewNetwork(t)
	cni := rt.NewCNI(t, tools, net, t.TempDir(), rt.ChainOptions{Leakguard: withLeakguard})
	ctd := rt.StartContainerd(t, tools, rt.ContainerdOptions{CNI: cni})
	ctd.ImportImages(t, images.Pause, images.Busybox)
	return net, cni, ctd
}

// TestContainerdPodLifecycle follows one pod through CRI as kubelet drives
// it: RunPodSandbox (ADD: an IP and a leakguard record of the host veth),
// StopPodSandbox (DEL with the netns still mounted: leakguard leaves the host
// side to bridge, which removes it), RemovePodSandbox (a second DEL with
// CNI_NETNS="": harmless, nothing left behind).
func TestContainerdPodLifecycle(t *testing.T) {
	net, cni, ctd := containerd(t, true)

	pod := ctd.Crictl.RunPod(t, rt.PodSpec{})
	st := ctd.Crictl.InspectPod(t, pod.ID)
	ip, err := netip.ParseAddr(st.IP)
	if err != nil || !net.Subnet.Contains(ip) {
		t.Fatalf("pod IP %q is not in the network's %s", st.IP, net.Subnet)
	}
	if st.NetnsPath == "" || !strings.HasPrefix(st.NetnsPath, ctd.State) {
		t.Fatalf("pod netns path %q is not under the private state dir %s", st.NetnsPath, ctd.State)
	}
	veth := hostVeth(t, net)
	adds := cni.CallsFor(t, "leakguard", "ADD", pod.ID)
	if len(adds) != 1 || adds[0].ExitCode != 0 || adds[0].Netns != st.NetnsPath || adds[0].NetnsState != cnicall.NetnsMounted {
		t.Fatalf("want one successful leakguard ADD with the mounted pod netns, got %s", describeCalls(adds))
	}
	key := record.Key{Network: net.Name, ContainerID: pod.ID, IfName: "eth0"}
	recs, _ := cni.Entries(t)
	if len(recs) != 1 || recs[0].Record.Key != key {
		t.Fatalf("want one leakguard record for %s, got %d", key, len(recs))
	}
	rec := recs[0].Record
	if len(rec.HostLinks) != 1 || rec.HostLinks[0].Index != veth.Attrs().Index || rec.HostLinks[0].Name != veth.Attrs().Name ||
		!strings.EqualFold(rec.HostLinks[0].MAC, veth.Attrs().HardwareAddr.String()) {
		t.Fatalf("record's host links %+v, want the pod's host veth %s (ifindex %d)", rec.HostLinks, veth.Attrs().Name, veth.Attrs().Index)
	}
	if len(rec.IPs) != 1 || !strings.HasPrefix(rec.IPs[0], st.IP+"/") {
		t.Fatalf("record's IPs %v, want %s", rec.IPs, st.IP)
	}

	// StopPodSandbox: DEL runs the list in reverse, leakguard first, while
	// the netns is still mounted.
	if err := ctd.Crictl.StopPod(pod.ID); err != nil {
		t.Fatal(err)
	}
	dels := chainDELs(t, cni, pod.ID)
	if len(dels) != 2 || dels[0].Plugin != "leakguard" || dels[1].Plugin != "bridge" {
		t.Fatalf("stopp: want leakguard's DEL then bridge's, got %s", describeCalls(dels))
	}
	for _, d := range dels {
		if d.ExitCode != 0 || d.Netns != st.NetnsPath || d.NetnsState != cnicall.NetnsMounted {
			t.Fatalf("stopp: want DELs with the pod netns still mounted, rc 0, got %s", describeCalls(dels))
		}
	}
	stopMsgs := delMessages(t, cni, pod.ID)
	if !containsMsg(stopMsgs, "netns alive: host side left to the main plugin") || containsMsg(stopMsgs, "reaped") {
		t.Fatalf("stopp: leakguard should find the netns alive and leave the host side to bridge; it logged %q", stopMsgs)
	}
	if linkExists(t, veth) {
		t.Fatalf("stopp: bridge's DEL should have removed host veth %s", veth.Attrs().Name)
	}

	// RemovePodSandbox: a second DEL, CNI_NETNS empty.
	if err := ctd.Crictl.RemovePod(pod.ID); err != nil {
		t.Fatal(err)
	}
	dels = chainDELs(t, cni, pod.ID)
	if len(dels) != 4 {
		t.Fatalf("rmp: want one more DEL of leakguard and bridge, got %s", describeCalls(dels))
	}
	for _, d := range dels[2:] {
		if d.ExitCode != 0 || d.Netns != "" || d.NetnsState != cnicall.NetnsEmpty {
			t.Fatalf("rmp: want DELs with CNI_NETNS=\"\" and rc 0, got %s", describeCalls(dels[2:]))
		}
	}
	if !dels[0].PrevResult || dels[2].PrevResult {
		t.Fatalf("want stopp's DEL with the cached ADD result as prevResult and rmp's without (libcni drops its cache after a DEL), got %+v", dels)
	}
	if dels[2].Plugin != "leakguard" {
		t.Fatalf("rmp: leakguard's DEL should run first, got %s", describeCalls(dels[2:]))
	}
	allMsgs := delMessages(t, cni, pod.ID)
	for _, m := range allMsgs[len(stopMsgs):] {
		if strings.HasPrefix(m, "reaped") || strings.HasPrefix(m, "deleted") || strings.Contains(m, "not reaped") {
			t.Fatalf("rmp: the second DEL must not act again, leakguard logged %q", m)
		}
	}
	if files := stateFiles(t, cni); len(files) != 0 {
		t.Fatalf("rmp: leakguard's state dir should hold nothing for a deleted pod, holds %v", files)
	}
	if ipFile := filepath.Join(cni.IPAMDir, net.Name, st.IP); fileExists(ipFile) {
		t.Fatalf("rmp: host-local still holds %s", st.IP)
	}
}

// TestContainerdLeak: the pod netns outlives its path, as with the
// auth_rpcgss bug, kept alive by a socket inside it while its bind mount is
// removed before StopPodSandbox. containerd then sends DEL with
// CNI_NETNS="", bridge can only release the IP, and the host veth stays,
// unless leakguard reaps it.
func TestContainerdLeak(t *testing.T) {
	for _, withLeakguard := range []bool{true, false} {
		name := "with leakguard"
		if !withLeakguard {
			name = "without leakguard (control)"
		}
		t.Run(name, func(t *testing.T) {
			net, cni, ctd := containerd(t, withLeakguard)
			pod := ctd.Crictl.RunPod(t, rt.PodSpec{})
			st := ctd.Crictl.InspectPod(t, pod.ID)
			veth := hostVeth(t, net)

			rt.HoldNetns(t, tools, st.NetnsPath)
			if err := rt.RemoveNetnsPath(st.NetnsPath); err != nil {
				t.Fatal(err)
			}
			if err := ctd.Crictl.StopPod(pod.ID); err != nil {
				t.Fatalf("stopp with the netns path gone must succeed: %v", err)
			}
			dels := chainDELs(t, cni, pod.ID)
			want := []string{"bridge"}
			if withLeakguard {
				want = []string{"leakguard", "bridge"}
			}
			if len(dels) != len(want) {
				t.Fatalf("stopp: want DELs of %v, got %s", want, describeCalls(dels))
			}
			for i, d := range dels {
				if d.Plugin != want[i] || d.Netns != "" || d.NetnsState != cnicall.NetnsEmpty || d.ExitCode != 0 {
					t.Fatalf("stopp: want DELs of %v with CNI_NETNS=\"\", rc 0, got %s", want, describeCalls(dels))
				}
			}

			if !withLeakguard {
				if !linkExists(t, veth) {
					t.Fatalf("control: without leakguard the host veth %s should stay", veth.Attrs().Name)
				}
				assertPeerInLeakedNetns(t, veth)
				if err := ctd.Crictl.RemovePod(pod.ID); err != nil {
					t.Fatal(err)
				}
				if !linkExists(t, veth) {
					t.Fatalf("control: rmp should not remove host veth %s either", veth.Attrs().Name)
				}
				return
			}

			if linkExists(t, veth) {
				t.Fatalf("host veth %s is still there after stopp: leakguard should have reaped it", veth.Attrs().Name)
			}
			msgs := delMessages(t, cni, pod.ID)
			reaped := false
			for _, rec := range cni.LeakguardLogLines(t, pod.ID) {
				if rec["msg"] == "reaped host link of gone netns" && rec["netns"] == "gone" &&
					strings.Contains(rec["link"].(string), veth.Attrs().Name) {
					reaped = true
				}
			}
			if !reaped {
				t.Fatalf("leakguard's log should say it reaped %s because the netns is gone; it logged %q", veth.Attrs().Name, msgs)
			}
			if err := ctd.Crictl.RemovePod(pod.ID); err != nil {
				t.Fatal(err)
			}
			if files := stateFiles(t, cni); len(files) != 0 {
				t.Fatalf("leakguard's state dir should hold nothing after rmp, holds %v", files)
			}
		})
	}
}

// assertPeerInLeakedNetns checks the host veth's peer is in another netns
// (the leaked pod netns), not on the host.
func assertPeerInLeakedNetns(t *testing.T, veth netlink.Link) {
	t.Helper()
	l, err := netlink.LinkByIndex(veth.Attrs().Index)
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().NetNsID < 0 {
		t.Fatalf("host veth %s: its peer should be in the leaked netns, link-netnsid is %d", veth.Attrs().Name, l.Attrs().NetNsID)
	}
}

// TestContainerdStatus: containerd runs CNI STATUS (cniVersion 1.1.0) on
// the CRI Status call; while leakguard's state dir is unusable the network
// is reported not ready with leakguard's message, and ready again after.
func TestContainerdStatus(t *testing.T) {
	_, cni, ctd := containerd(t, true)
	if err := os.MkdirAll(cni.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	assertNetworkReady(t, ctd, "")

	if err := os.Chmod(cni.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	assertNetworkNotReady(t, ctd, "state dir "+cni.StateDir+" unusable", "must be private")
	if err := os.Chmod(cni.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	assertNetworkReady(t, ctd, "after the state dir is private again")

	saved := cni.StateDir + ".saved"
	if err := os.Rename(cni.StateDir, saved); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cni.StateDir, []byte("not a dir"), 0o600); err != nil {
		t.Fatal(err)
	}
	assertNetworkNotReady(t, ctd, "state dir "+cni.StateDir+" unusable", "not a directory")
	if err := os.Remove(cni.StateDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(saved, cni.StateDir); err != nil {
		t.Fatal(err)
	}
	assertNetworkReady(t, ctd, "after the state dir is back")

	statuses := cnicall.Filter(mustCalls(t, cni), func(c cnicall.Call) bool { return c.Plugin == "leakguard" && c.Command == "STATUS" })
	failed := cnicall.Filter(statuses, func(c cnicall.Call) bool { return c.ExitCode != 0 })
	if len(failed) < 2 || len(failed) == len(statuses) {
		t.Fatalf("want leakguard STATUS calls failing while the state dir was unusable and passing otherwise, got %s", describeCalls(statuses))
	}
}

func assertNetworkReady(t *testing.T, ctd *rt.Containerd, when string) {
	t.Helper()
	if c := ctd.Crictl.Condition(t, "NetworkReady"); !c.Status {
		t.Fatalf("NetworkReady should be true %s: %+v", when, c)
	}
}

func assertNetworkNotReady(t *testing.T, ctd *rt.Containerd, wants ...string) {
	t.Helper()
	c := ctd.Crictl.Condition(t, "NetworkReady")
	if c.Status {
		t.Fatalf("NetworkReady should be false while leakguard's state dir is unusable: %+v", c)
	}
	for _, w := range wants {
		if !strings.Contains(c.Message, w) {
			t.Fatalf("NetworkReady message should carry leakguard's %q: %+v", w, c)
		}
	}
}

func mustCalls(t *testing.T, cni *rt.CNI) []cnicall.Call {
	t.Helper()
	calls, err := cni.Calls()
	if err != nil {
		t.Fatal(err)
	}
	return calls
}

// stateFiles lists the files (not dirs) left in leakguard's state dir.
func stateFiles(t *testing.T, cni *rt.CNI) []string {
	t.Helper()
	var files []string
	for _, e := range cni.StateEntries(t) {
		if fi, err := os.Lstat(filepath.Join(cni.StateDir, e)); err == nil && !fi.IsDir() {
			files = append(files, e)
		}
	}
	return files
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
