package kube

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/leakguard/leakguard/test/cnitest"
	"github.com/leakguard/leakguard/test/runtime"
)

// Versions built by scripts/install-kube-tools.sh (its defaults).
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.7.3"
)

// Tools are the binaries a cluster runs: the node's container runtime and
// CNI plugins (test/runtime) and the Kubernetes components.
type Tools struct {
	Runtime runtime.Tools

	Etcd                  string
	KubeAPIServer         string
	KubeControllerManager string
	KubeScheduler         string
	Kubelet               string
	Kubectl               string
	Iptables              string
}

// Debian's iptables (.ci/run installs it): the service-IP DNAT rule.
const debianIptables = "/usr/sbin/iptables"

// FindTools locates everything, building what is missing: test/runtime's
// tools (runtime.FindTools) and the Kubernetes binaries through
// scripts/install-kube-tools.sh into <repo>/.cache/kube (or
// $LEAKGUARD_KUBE_CACHE), a no-op once its stamps match. A missing tool is an
// error, never a reason to skip.
func FindTools(scratch string) (Tools, error) {
	var t Tools
	var err error
	if t.Runtime, err = runtime.FindTools(scratch); err != nil {
		return Tools{}, err
	}
	root, err := cnitest.RepoRoot()
	if err != nil {
		return Tools{}, err
	}
	cache := os.Getenv("LEAKGUARD_KUBE_CACHE")
	if cache == "" {
		cache = filepath.Join(root, ".cache", "kube")
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "install-kube-tools.sh"), cache)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBE_VERSION="+KubeVersion, "ETCD_VERSION="+EtcdVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		return Tools{}, fmt.Errorf("scripts/install-kube-tools.sh %s failed (run `make kube-deps`): %w\n%s", cache, err, out)
	}
	bin := filepath.Join(cache, KubeVersion, "bin")
	t.Etcd = filepath.Join(bin, "etcd")
	t.KubeAPIServer = filepath.Join(bin, "kube-apiserver")
	t.KubeControllerManager = filepath.Join(bin, "kube-controller-manager")
	t.KubeScheduler = filepath.Join(bin, "kube-scheduler")
	t.Kubelet = filepath.Join(bin, "kubelet")
	t.Kubectl = filepath.Join(bin, "kubectl")
	t.Iptables = debianIptables
	for _, p := range []string{t.Etcd, t.KubeAPIServer, t.KubeControllerManager, t.KubeScheduler, t.Kubelet, t.Kubectl} {
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			return Tools{}, fmt.Errorf("required binary %s is missing (run `make kube-deps`)", p)
		}
	}
	if _, err := os.Stat(t.Iptables); err != nil {
		return Tools{}, fmt.Errorf("%s is missing: install Debian's iptables (.ci/run does)", t.Iptables)
	}
	return t, nil
}
