package cri

import (
	"fmt"
	"testing"

	rt "github.com/leakguard/leakguard/test/runtime"
	"github.com/leakguard/leakguard/test/runtime/cnicall"
)

// TestDockerPodLifecycle follows one pod through cri-dockerd as kubelet
// drives it: RunPodSandbox (ADD with /proc/<pause pid>/ns/net), StopPodSandbox
// (DEL with that path while the sandbox still runs: leakguard leaves the host
// side to bridge, which removes it), RemovePodSandbox and a repeated
// StopPodSandbox (no CNI call: cri-dockerd remembers the teardown).
func TestDockerPodLifecycle(t *testing.T) {
	net := rt.NewNetwork(t)
	cni := rt.NewCNI(t, tools, net, t.TempDir(), rt.ChainOptions{Leakguard: true, CNIVersion: dockerCNIVersion})
	d := rt.StartDocker(t, tools, rt.DockerOptions{CNI: cni})
	d.LoadImages(t, images.Pause, images.Busybox)

	pod := d.Crictl.RunPod(t, rt.PodSpec{})
	netnsPath := fmt.Sprintf("/proc/%d/ns/net", d.SandboxPID(t, pod.ID))
	veth := hostVeth(t, net)
	if recs, _ := cni.Entries(t); len(recs) != 1 || recs[0].Record.ContainerID != pod.ID {
		t.Fatalf("want one leakguard record for the pod, got %d", len(recs))
	}

	if err := d.Crictl.StopPod(pod.ID); err != nil {
		t.Fatal(err)
	}
	dels := chainDELs(t, cni, pod.ID)
	if len(dels) != 2 || dels[0].Plugin != "leakguard" || dels[1].Plugin != "bridge" {
		t.Fatalf("stopp: want leakguard's DEL then bridge's, got %s", describeCalls(dels))
	}
	for _, c := range dels {
		if c.Netns != netnsPath || c.NetnsState != cnicall.NetnsMounted || c.ExitCode != 0 {
			t.Fatalf("stopp: want DELs with CNI_NETNS=%s (the sandbox still runs), rc 0, got %s", netnsPath, describeCalls(dels))
		}
	}
	if msgs := delMessages(t, cni, pod.ID); !containsMsg(msgs, "netns alive: host side left to the main plugin") || containsMsg(msgs, "reaped") {
		t.Fatalf("stopp: leakguard should find the netns alive and leave the host side to bridge; it logged %q", msgs)
	}
	if linkExists(t, veth) {
		t.Fatalf("stopp: bridge's DEL should have removed host veth %s", veth.Attrs().Name)
	}

	if err := d.Crictl.StopPod(pod.ID); err != nil {
		t.Fatal(err)
	}
	if err := d.Crictl.RemovePod(pod.ID); err != nil {
		t.Fatal(err)
	}
	// cri-dockerd remembers the pod's network is torn down: no second DEL,
	// on rmp or on a repeated stopp (until cri-dockerd restarts).
	if n := len(chainDELs(t, cni, pod.ID)); n != 2 {
		t.Fatalf("rmp and a second stopp: want no more DELs, got %s", describeCalls(chainDELs(t, cni, pod.ID)))
	}
	// So what leakguard kept at the alive DEL stays: a tombstone naming the
	// veth bridge removed, for DEL's bounded sweep to drop (cniVersion 1.0.0:
	// no GC). Nothing else.
	recs, tombs := cni.Entries(t)
	if len(recs) != 0 || len(tombs) != 1 || tombs[0].Record.ContainerID != pod.ID ||
		len(tombs[0].Record.HostLinks) != 1 || tombs[0].Record.HostLinks[0].Index != veth.Attrs().Index {
		t.Fatalf("want no record and the pod's tombstone naming %s, got %d records, %d tombstones", veth.Attrs().Name, len(recs), len(tombs))
	}
	if files := stateFiles(t, cni); len(files) != 1 {
		t.Fatalf("want only the tombstone in leakguard's state dir, got %v", files)
	}
}
