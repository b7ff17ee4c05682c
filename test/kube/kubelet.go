package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// hostSysctls are what kubelet sets on the host at start (and fails with
// protectKernelDefaults when they differ): it gets files of its own bound
// over them in its mount namespace.
var hostSysctls = []string{"/proc/sys/vm/overcommit_memory", "/proc/sys/kernel/panic", "/proc/sys/kernel/panic_on_oops"}

// kubeletScript runs in kubelet's own mount namespace (unshare -m,
// propagation unchanged, so the shared root dir keeps propagating its
// volume mounts to containerd's namespace): /proc is made private there
// first, so the binds over /proc/sys never reach the host, then kubelet.
// $1..$3 are the files bound over hostSysctls, the rest kubelet's argv.
const kubeletScript = `set -e
mount --make-rprivate /proc
mount --bind "$1" /proc/sys/vm/overcommit_memory
mount --bind "$2" /proc/sys/kernel/panic
mount --bind "$3" /proc/sys/kernel/panic_on_oops
shift 3
exec "$@"`

func (c *Cluster) startKubelet(env []string, pt ports) error {
	c.KubeletRootDir = c.path("kubelet")
	c.PodLogsDir = c.path("pod-logs")
	for _, d := range []string{c.KubeletRootDir, c.PodLogsDir, c.path("kubelet-certs"), c.path("volume-plugins"), c.path("sysctl")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	// kubelet mounts tmpfs volumes (service-account tokens) below its root
	// dir in its namespace; a shared bind mount carries them to containerd.
	if err := unix.Mount(c.KubeletRootDir, c.KubeletRootDir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind kubelet root dir: %w", err)
	}
	if err := unix.Mount("", c.KubeletRootDir, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make kubelet root dir shared: %w", err)
	}
	if err := c.makeCgroupRoot(); err != nil {
		return err
	}
	if err := c.record.noteKubeletPaths(); err != nil {
		return err
	}
	var sysctlFiles []string
	for _, p := range hostSysctls {
		cur, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		f := c.path("sysctl", filepath.Base(p))
		if err := os.WriteFile(f, cur, 0o644); err != nil {
			return err
		}
		sysctlFiles = append(sysctlFiles, f)
	}
	raw, err := json.MarshalIndent(c.kubeletConfig(pt), "", "  ")
	if err != nil {
		return err
	}
	conf := c.path("kubelet-config.json")
	if err := os.WriteFile(conf, raw, 0o600); err != nil {
		return err
	}
	argv := append([]string{c.Tools.Runtime.Unshare, "-m", "--propagation", "unchanged", "--", "/bin/sh", "-c", kubeletScript, "kubelet"}, sysctlFiles...)
	argv = append(argv, c.Tools.Kubelet,
		"--config="+conf,
		"--kubeconfig="+c.path("kubelet.kubeconfig"),
		"--root-dir="+c.KubeletRootDir,
		"--cert-dir="+c.path("kubelet-certs"),
		"--hostname-override="+NodeName,
		"--v=2")
	c.kubelet, err = c.startDaemon("kubelet", env, argv...)
	return err
}

// kubeletConfig is a KubeletConfiguration for these machines (cgroup v1,
// no swap accounting, no CAP_SYS_RESOURCE) with every path private and
// every listener on a free loopback port.
func (c *Cluster) kubeletConfig(pt ports) map[string]any {
	endpoint := "unix://" + c.Containerd.Address
	return map[string]any{
		"kind":       "KubeletConfiguration",
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		"address":    "127.0.0.1", "port": pt.kubelet, "readOnlyPort": 0,
		"healthzBindAddress": "127.0.0.1", "healthzPort": pt.kubeletHealthz,
		"tlsCertFile":       c.path("pki", "kubelet-serving.crt"),
		"tlsPrivateKeyFile": c.path("pki", "kubelet-serving.key"),
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": c.pki.CAFile},
		},
		"authorization":            map[string]any{"mode": "Webhook"},
		"containerRuntimeEndpoint": endpoint,
		"imageServiceEndpoint":     endpoint,
		"cgroupDriver":             "cgroupfs",
		// Pods' cgroups (kubepods/...) below the containerd instance's
		// parent: its teardown and stale sweep remove them.
		"cgroupRoot":             c.Containerd.CgroupParent,
		"failSwapOn":             false,
		"failCgroupV1":           false,
		"makeIPTablesUtilChains": false,
		"oomScoreAdj":            0,
		"evictionHard":           map[string]any{},
		// Never collect the imported test images (nothing can be pulled).
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"podLogsDir":                  c.PodLogsDir,
		"volumePluginDir":             c.path("volume-plugins"),
		"nodeStatusUpdateFrequency":   "2s",
		"syncFrequency":               "10s",
		"serializeImagePulls":         false,
		"resolvConf":                  "/etc/resolv.conf",
	}
}

// makeCgroupRoot creates the cgroup root kubelet wants to exist in every
// hierarchy; cpuset's needs its cpus and mems set before any task joins a
// child (copied from the hierarchy's root).
func (c *Cluster) makeCgroupRoot() error {
	const root = "/sys/fs/cgroup"
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	dirs := []string{filepath.Join(root, c.Containerd.CgroupParent)}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil {
		// v1 (or hybrid): one mount per hierarchy.
		dirs = dirs[:0]
		for _, e := range entries {
			if e.IsDir() && e.Type()&os.ModeSymlink == 0 {
				dirs = append(dirs, filepath.Join(root, e.Name(), c.Containerd.CgroupParent))
			}
		}
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cgroup root for kubelet: %w", err)
		}
		if filepath.Base(filepath.Dir(d)) != "cpuset" {
			continue
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(root, "cpuset", f))
			if err != nil {
				return err
			}
			cur, _ := os.ReadFile(filepath.Join(d, f))
			if strings.TrimSpace(string(cur)) != "" {
				continue
			}
			if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(d, f), err)
			}
		}
	}
	return nil
}

// FreezeKubelet stops kubelet (SIGSTOP) until the returned func is called
// (or the test ends): nothing reacts to a pod's death meanwhile, as on a
// node whose kubelet hangs.
func (c *Cluster) FreezeKubelet(t testing.TB) func() {
	t.Helper()
	pid := c.kubelet.PID()
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatalf("freeze kubelet: %v", err)
	}
	var once sync.Once
	thaw := func() {
		once.Do(func() {
			if err := unix.Kill(pid, unix.SIGCONT); err != nil {
				t.Errorf("thaw kubelet: %v", err)
			}
		})
	}
	t.Cleanup(thaw)
	return thaw
}
