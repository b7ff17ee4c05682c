package cri

import (
	"fmt"
	"strings"
	"testing"

	rt "github.com/leakguard/leakguard/test/runtime"
	"github.com/leakguard/leakguard/test/runtime/cnicall"
)

// cri-dockerd 0.3 speaks CNI up to 1.0.0.
const dockerCNIVersion = "1.0.0"

// TestDockerLeak is the failure that started leakguard, end to end, under
// dockershim's successor: a pod on a bridge chain (cniVersion 1.0.0), its
// netns kept alive by a socket as the kernel bug keeps it, its sandbox
// container killed behind the runtime's back (`docker kill`), then
// StopPodSandbox. cri-dockerd can no longer find the netns (its path was
// /proc/<pause pid>/ns/net) and sends DEL with CNI_NETNS="": without
// leakguard the host veth stays; with it, it is gone and leakguard's log
// says why.
func TestDockerLeak(t *testing.T) {
	for _, withLeakguard := range []bool{true, false} {
		name := "with leakguard"
		if !withLeakguard {
			name = "without leakguard (control)"
		}
		t.Run(name, func(t *testing.T) {
			net := rt.NewNetwork(t)
			cni := rt.NewCNI(t, tools, net, t.TempDir(), rt.ChainOptions{Leakguard: withLeakguard, CNIVersion: dockerCNIVersion})
			d := rt.StartDocker(t, tools, rt.DockerOptions{CNI: cni})
			d.LoadImages(t, images.Pause, images.Busybox)

			pod := d.Crictl.RunPod(t, rt.PodSpec{})
			st := d.Crictl.InspectPod(t, pod.ID)
			if st.State != "SANDBOX_READY" || st.IP == "" {
				t.Fatalf("pod not ready with an IP: %+v", st)
			}
			pid := d.SandboxPID(t, pod.ID)
			netnsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
			adds := cni.CallsFor(t, "bridge", "ADD", pod.ID)
			if len(adds) != 1 || adds[0].Netns != netnsPath || adds[0].NetnsState != cnicall.NetnsMounted || adds[0].CNIVersion != dockerCNIVersion {
				t.Fatalf("want one bridge ADD (cniVersion %s) with CNI_NETNS=%s, got %s", dockerCNIVersion, netnsPath, describeCalls(adds))
			}
			veth := hostVeth(t, net)

			rt.HoldNetns(t, tools, netnsPath)
			if _, err := d.Docker("kill", pod.ID); err != nil {
				t.Fatal(err)
			}
			if err := d.Crictl.StopPod(pod.ID); err != nil {
				t.Fatalf("stopp after docker kill: %v", err)
			}
			dels := chainDELs(t, cni, pod.ID)
			want := []string{"bridge"}
			if withLeakguard {
				want = []string{"leakguard", "bridge"}
			}
			if len(dels) != len(want) {
				t.Fatalf("stopp: want DELs of %v, got %s", want, describeCalls(dels))
			}
			for i, c := range dels {
				if c.Plugin != want[i] || c.Netns != "" || c.NetnsState != cnicall.NetnsEmpty || c.ExitCode != 0 {
					t.Fatalf("stopp: want DELs of %v with CNI_NETNS=\"\" (the sandbox is dead), rc 0, got %s", want, describeCalls(dels))
				}
			}

			if !withLeakguard {
				if !linkExists(t, veth) {
					t.Fatalf("control: without leakguard host veth %s should stay", veth.Attrs().Name)
				}
				assertPeerInLeakedNetns(t, veth)
				if err := d.Crictl.RemovePod(pod.ID); err != nil {
					t.Fatal(err)
				}
				if !linkExists(t, veth) {
					t.Fatalf("control: rmp should not remove host veth %s either", veth.Attrs().Name)
				}
				return
			}

			if linkExists(t, veth) {
				t.Fatalf("host veth %s still there after stopp: leakguard should have reaped it", veth.Attrs().Name)
			}
			var why string
			for _, rec := range cni.LeakguardLogLines(t, pod.ID) {
				if rec["msg"] == "reaped host link of gone netns" && strings.Contains(fmt.Sprint(rec["link"]), veth.Attrs().Name) {
					why = fmt.Sprint(rec["netnsReason"])
				}
			}
			if why != "CNI_NETNS is empty" {
				t.Fatalf("leakguard's log should say it reaped %s because CNI_NETNS is empty; it logged %q",
					veth.Attrs().Name, delMessages(t, cni, pod.ID))
			}
			if err := d.Crictl.RemovePod(pod.ID); err != nil {
				t.Fatal(err)
			}
			if files := stateFiles(t, cni); len(files) != 0 {
				t.Fatalf("leakguard's state dir should hold nothing after rmp, holds %v", files)
			}
		})
	}
}
