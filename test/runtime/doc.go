// Package runtime starts private container runtimes for end-to-end tests:
// containerd 2.x with its CRI plugin, and Docker's dockerd behind
// cri-dockerd, both driven through crictl, the CRI client kubelet's calls
// are made of. Each instance lives in its own temp dir and never touches the
// machine's /run/containerd, /etc/containerd, Docker, /opt/cni or /etc/cni:
//
//   - FindTools locates (building them once, cached under <repo>/.cache)
//     containerd, its runc shim, ctr, crictl and cri-dockerd, and the
//     test-only binaries (pause, cnispy, oomclamp, leaksim).
//   - NewNetwork reserves a bridge name and a /24 no other instance on the
//     machine uses; NewCNI lays out a private CNI bin dir (the plugins behind
//     test/cmd/cnispy, which logs every call), conf dir, host-local data dir
//     and leakguard state dir, and writes the bridge (+ leakguard) conflist.
//   - BuildImages writes the pause and busybox test images offline, as OCI
//     archives (for ctr) and docker-save archives (for docker load).
//   - StartContainerd and StartDocker start the runtimes (containerd can be
//     stopped and started again, its NRI socket and plugin dirs are private);
//     their Crictl runs pods and containers, execs, inspects and reads the
//     runtime's status conditions.
//   - HoldNetns keeps a pod netns alive as the auth_rpcgss bug does (a socket
//     inside it), RemoveNetnsPath removes a runtime's bind mount of it.
//
// A typical test:
//
//	net := runtime.NewNetwork(t)
//	cni := runtime.NewCNI(t, tools, net, t.TempDir(), runtime.ChainOptions{Leakguard: true})
//	ctd := runtime.StartContainerd(t, tools, runtime.ContainerdOptions{CNI: cni})
//	ctd.ImportImages(t, images.Pause, images.Busybox)
//	pod := ctd.Crictl.RunPod(t, runtime.PodSpec{})
//	id := ctd.Crictl.RunContainer(t, pod, runtime.ContainerSpec{Command: []string{"sleep", "60"}})
//	out, err := ctd.Crictl.Exec(id, "cat", "/etc/hostname")
//	calls, err := cni.Calls() // every CNI call the runtime made
//
// Everything started is stopped and removed when the test ends, failed or
// not (t.Cleanup): pods, daemons, shims, container processes, mounts, netns
// bind mounts, cgroups, host veths on the private bridge, the bridge itself,
// the CNI result cache entries of its network and the temp dirs. Runtimes run
// in the host netns (pods are real host veths on the private bridge) and must
// run as root.
package runtime
