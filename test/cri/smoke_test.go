package cri

import (
	"testing"

	rt "github.com/leakguard/leakguard/test/runtime"
)

func TestSmoke(t *testing.T) {
	net := rt.NewNetwork(t)
	cni := rt.NewCNI(t, tools, net, t.TempDir(), rt.ChainOptions{Leakguard: true})
	ctd := rt.StartContainerd(t, tools, rt.ContainerdOptions{CNI: cni})
	ctd.ImportImages(t, images.Pause, images.Busybox)
	pod := ctd.Crictl.RunPod(t, rt.PodSpec{})
	st := ctd.Crictl.InspectPod(t, pod.ID)
	t.Logf("%+v", st)
	id := ctd.Crictl.RunContainer(t, pod, rt.ContainerSpec{Command: []string{"sleep", "1000"}})
	out, err := ctd.Crictl.Exec(id, "cat", "/etc/hostname")
	t.Logf("%q %v", out, err)
	calls, _ := cni.Calls()
	for _, c := range calls {
		t.Log(c)
	}
}
