// Package kube runs a private single-node Kubernetes cluster for end-to-end
// tests, over test/runtime's private containerd: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kubelet, built from the Go
// module proxy by scripts/install-kube-tools.sh (`make kube-deps`), all on
// 127.0.0.1 with certificates made here (crypto/x509).
//
//	tools, err := kube.FindTools(scratch)
//	c := kube.Start(t, tools, kube.Options{})
//	c.ImportImage(t, "bin/leakguard-image.tar")
//	out := c.MustKubectl(t, "get", "nodes")
//	sb := c.Sandbox(t, pod.Metadata.UID) // the CRI view: netns path, pid
//
// The node is called "localhost"; its pod network is runtime.NewCNI's
// bridge (without leakguard unless Options.Chain asks), in CNI dirs a
// DaemonSet's hostPath mounts can point at (c.CNI.BinDir, c.CNI.ConfDir).
// There is no kube-proxy: one iptables rule DNATs the kubernetes service IP
// to the apiserver, so hostNetwork pods reach the API in-cluster.
//
// kubelet runs in its own mount namespace (unshare -m, propagation
// unchanged) with files bound over the three /proc/sys entries it would
// rewrite on the host; its root dir is a shared bind mount so the tmpfs
// volumes it mounts there reach containerd; its cgroups live below the
// containerd instance's cgroup parent. Everything lives below the containerd
// instance dir, so test/runtime's teardown and stale sweep cover processes,
// mounts, cgroups and files. What kubelet writes on the host regardless of
// its flags (/var/lib/kubelet/device-plugins, /var/log/containers links)
// and the DNAT rule are recorded in /tmp/lgk8s-*.json before they happen and
// undone at teardown, or by the next cluster after a killed run (only a
// record root wrote, naming only such changes: /tmp is everyone's). One cluster
// at a time per machine (a lock): those host paths and the service IP are
// shared.
package kube
