package cri

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	rt "github.com/leakguard/leakguard/test/runtime"
	"github.com/leakguard/leakguard/test/runtime/cnicall"
)

// TestContainerdWrappedLeak: the leak of TestContainerdLeak (the pod netns
// kept alive while its bind mount is removed before StopPodSandbox) under
// wrapper mode with pinNetns, one .conf of type leakguard whose delegate is
// bridge + host-local. containerd's DEL comes with CNI_NETNS="", and
// leakguard hands bridge its pin instead: bridge's own DEL tears the pod
// down in full (the host veth, the IP), leakguard has nothing left to reap,
// and the pin goes. leakguard finds bridge in containerd's CNI_PATH, which is
// the spied bin dir, so cnispy records the delegate's call too.
func TestContainerdWrappedLeak(t *testing.T) {
	net := rt.NewNetwork(t)
	cni := rt.NewCNI(t, tools, net, t.TempDir(), rt.ChainOptions{Wrap: true, LeakguardConf: map[string]any{"pinNetns": true}})
	ctd := rt.StartContainerd(t, tools, rt.ContainerdOptions{CNI: cni})
	ctd.ImportImages(t, images.Pause, images.Busybox)
	pinDir := cni.PinDir

	pod := ctd.Crictl.RunPod(t, rt.PodSpec{})
	st := ctd.Crictl.InspectPod(t, pod.ID)
	veth := hostVeth(t, net)
	ipFile := filepath.Join(cni.IPAMDir, net.Name, st.IP)
	if !fileExists(ipFile) {
		t.Fatalf("runp: host-local should hold %s under the wrapper's network name %s", st.IP, net.Name)
	}
	lgAdds := cni.CallsFor(t, "leakguard", "ADD", pod.ID)
	brAdds := cni.CallsFor(t, "bridge", "ADD", pod.ID)
	if len(lgAdds) != 1 || lgAdds[0].ExitCode != 0 || len(brAdds) != 1 || brAdds[0].ExitCode != 0 ||
		brAdds[0].Netns != st.NetnsPath || brAdds[0].NetnsState != cnicall.NetnsMounted ||
		brAdds[0].Network != net.Name || brAdds[0].CNIVersion != rt.DefaultCNIVersion {
		t.Fatalf("runp: want leakguard's ADD running bridge's with the pod netns, the outer name and version, got %s%s",
			describeCalls(lgAdds), describeCalls(brAdds))
	}
	podNetns := brAdds[0].NetnsInode
	recs, _ := cni.Entries(t)
	key := record.Key{Network: net.Name, ContainerID: pod.ID, IfName: "eth0"}
	if len(recs) != 1 || recs[0].Record.Key != key || recs[0].Record.Pin == nil {
		t.Fatalf("runp: want one leakguard record for %s with a netns pin, got %+v", key, recs)
	}
	pin := recs[0].Record.Pin.Path
	if filepath.Dir(pin) != pinDir {
		t.Fatalf("runp: pin %s is not in the default pin dir %s", pin, pinDir)
	}
	if got := pinsLeft(t, pinDir); len(got) != 2 || got[0] != "mount "+pin {
		t.Fatalf("runp: want the pod netns pinned at %s, pins: %v", pin, got)
	}

	rt.HoldNetns(t, tools, st.NetnsPath)
	if err := rt.RemoveNetnsPath(st.NetnsPath); err != nil {
		t.Fatal(err)
	}
	if err := ctd.Crictl.StopPod(pod.ID); err != nil {
		t.Fatalf("stopp with the netns path gone must succeed: %v", err)
	}
	dels := chainDELs(t, cni, pod.ID)
	if len(dels) != 2 || dels[0].Plugin != "leakguard" || dels[1].Plugin != "bridge" ||
		dels[0].Netns != "" || dels[0].NetnsState != cnicall.NetnsEmpty || dels[0].ExitCode != 0 {
		t.Fatalf("stopp: want containerd's DEL of leakguard with CNI_NETNS=\"\", rc 0, and leakguard's of bridge, got %s", describeCalls(dels))
	}
	if br := dels[1]; br.Netns != pin || br.NetnsState != cnicall.NetnsMounted || br.NetnsInode != podNetns || br.ExitCode != 0 {
		t.Fatalf("stopp: bridge's DEL should run through the pin %s holding the pod netns %s, rc 0, got %s (inode %s)",
			pin, podNetns, br, br.NetnsInode)
	}
	done := 0
	for _, rec := range cni.LeakguardLogLines(t, pod.ID) {
		switch rec["msg"] {
		case "main plugin's DEL done":
			if rec["delegate"] != "bridge" || rec["delegateNetns"] != pin {
				t.Fatalf("stopp: leakguard ran the main plugin's DEL as %v", rec)
			}
			done++
		case "reaped host link of gone netns":
			t.Fatalf("stopp: leakguard reaped %v: bridge's own DEL through the pin should have removed it", rec["link"])
		}
	}
	if done != 1 {
		t.Fatalf("stopp: leakguard should log the main plugin's DEL done once, logged %q", delMessages(t, cni, pod.ID))
	}
	if linkExists(t, veth) {
		t.Fatalf("stopp: host veth %s survived bridge's DEL through the pin", veth.Attrs().Name)
	}
	if fileExists(ipFile) {
		t.Fatalf("stopp: host-local still holds %s", st.IP)
	}
	if left := pinsLeft(t, pinDir); len(left) != 0 {
		t.Fatalf("stopp: pins left: %v", left)
	}

	// RemovePodSandbox: containerd's second DEL, CNI_NETNS="", no record
	// left: bridge's DEL gets no netns, and nothing acts again.
	stopMsgs := delMessages(t, cni, pod.ID)
	if err := ctd.Crictl.RemovePod(pod.ID); err != nil {
		t.Fatal(err)
	}
	dels = chainDELs(t, cni, pod.ID)
	if len(dels) < 3 || dels[2].Plugin != "leakguard" {
		t.Fatalf("rmp: want another DEL of leakguard, got %s", describeCalls(dels))
	}
	for _, d := range dels[2:] {
		if d.ExitCode != 0 || d.Netns != "" || d.NetnsState != cnicall.NetnsEmpty {
			t.Fatalf("rmp: want DELs with CNI_NETNS=\"\" and rc 0, got %s", describeCalls(dels[2:]))
		}
	}
	for _, m := range delMessages(t, cni, pod.ID)[len(stopMsgs):] {
		if strings.HasPrefix(m, "reaped") || strings.HasPrefix(m, "deleted") || strings.Contains(m, "not reaped") {
			t.Fatalf("rmp: the second DEL must not act again, leakguard logged %q", m)
		}
	}
	if files := stateFiles(t, cni); len(files) != 0 {
		t.Fatalf("rmp: leakguard's state dir should hold nothing for a deleted pod, holds %v", files)
	}
	if left := pinsLeft(t, pinDir); len(left) != 0 {
		t.Fatalf("rmp: pins left: %v", left)
	}
}

// pinsLeft lists the mounts under pinDir ("mount PATH", from mountinfo) then
// its entries ("entry NAME"): a pin is both.
func pinsLeft(t *testing.T, pinDir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var left []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], pinDir+"/") {
			left = append(left, "mount "+fields[4])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(pinDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		left = append(left, "entry "+e.Name())
	}
	return left
}
