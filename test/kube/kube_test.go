package kube

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leakguard/leakguard/test/runtime"
)

var testTools Tools

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		os.Stderr.WriteString("test/kube: must run as root (it starts a kubelet); run `sudo make test`\n")
		return 1
	}
	scratch, err := os.MkdirTemp("", "leakguard-kube-")
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	defer os.RemoveAll(scratch)
	if testTools, err = FindTools(scratch); err != nil {
		os.Stderr.WriteString("test/kube: " + err.Error() + "\n")
		return 1
	}
	return m.Run()
}

// TestCluster brings a cluster up, runs a hostNetwork pod and a pod on the
// pod network, and checks that nothing of it is left on the machine after.
func TestCluster(t *testing.T) {
	var instance, cgroupParent, bridge string
	var record string
	before := map[string]bool{}
	for _, p := range []string{kubeletVarLib, devicePluginsDir, containerLogsDir} {
		_, err := os.Lstat(p)
		before[p] = err == nil
	}
	t.Run("up", func(t *testing.T) {
		c := Start(t, testTools, Options{})
		instance, cgroupParent, bridge, record = c.Containerd.Dir, c.Containerd.CgroupParent, c.Network.Bridge, c.record.path
		if c.StartTime > 30*time.Second {
			t.Logf("cluster start took %v (budget 30 s)", c.StartTime)
		}

		var n Node
		if err := c.GetJSON("/api/v1/nodes/"+NodeName, &n); err != nil {
			t.Fatal(err)
		}
		if n.Spec.PodCIDR == "" {
			t.Errorf("node has no podCIDR (controller-manager's node IPAM did not run)")
		}

		c.MustKubectl(t, "run", "host", "--image="+runtime.BusyboxImage, "--restart=Never",
			`--overrides={"spec":{"hostNetwork":true}}`, "--", "sleep", "3600")
		c.MustKubectl(t, "run", "net", "--image="+runtime.BusyboxImage, "--restart=Never", "--", "sleep", "3600")
		host := c.WaitPod(t, "default", "host", 60*time.Second, PodRunningReady)
		pod := c.WaitPod(t, "default", "net", 60*time.Second, PodRunningReady)
		if !host.Spec.HostNetwork {
			t.Errorf("pod host is not hostNetwork")
		}
		ip, err := netip.ParseAddr(pod.Status.PodIP)
		if err != nil || !c.Network.Subnet.Contains(ip) {
			t.Errorf("pod IP %q not in the node's pod network %s", pod.Status.PodIP, c.Network.Subnet)
		}
		if calls := c.CNI.CallsFor(t, "bridge", "ADD", c.Sandbox(t, pod.Metadata.UID).ID); len(calls) != 1 {
			t.Errorf("bridge ADD calls for the pod: %d, want 1", len(calls))
		}
		// The API through the kubernetes service IP, as in-cluster clients
		// (hostNetwork) reach it: the DNAT rule leads to the apiserver's TLS
		// port (Go's server answers plain HTTP there with a 400 naming
		// HTTPS; busybox's wget has no TLS), and the service-account token
		// (a tmpfs kubelet mounted in its own mount namespace) reached the
		// container through the shared root dir.
		out, _ := c.Kubectl("exec", "host", "--", "sh", "-c",
			"test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token; "+
				"wget -q -O- http://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/ 2>&1; true")
		if !strings.Contains(out, "token") {
			t.Errorf("no service-account token in the hostNetwork pod: %s", out)
		}
		if !strings.Contains(out, "400") {
			t.Errorf("the apiserver through %s from a hostNetwork pod: %s", ServiceIP, out)
		}
		sb := c.Sandbox(t, pod.Metadata.UID)
		c.MustKubectl(t, "delete", "pod", "net", "--wait=true", "--timeout=60s", "--grace-period=1")
		if calls := c.CNI.CallsFor(t, "bridge", "DEL", sb.ID); len(calls) == 0 {
			t.Errorf("no bridge DEL for the deleted pod's sandbox %s", sb.ID)
		}
	})
	// Nothing of the cluster may be left.
	if _, err := os.Lstat(instance); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("instance dir %s still there (%v)", instance, err)
	}
	if _, err := os.Lstat(record); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("host record %s still there (%v)", record, err)
	}
	for p, was := range before {
		if _, err := os.Lstat(p); !was && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left on the host (%v)", p, err)
		}
	}
	for _, f := range devicePluginFiles {
		if _, err := os.Lstat(filepath.Join(devicePluginsDir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left on the host (%v)", f, err)
		}
	}
	if out, err := execOut(testTools.Iptables, "-t", "nat", "-S", "OUTPUT"); err != nil || strings.Contains(out, instance) {
		t.Errorf("DNAT rule left (%v):\n%s", err, out)
	}
	matches, _ := filepath.Glob("/sys/fs/cgroup/*" + cgroupParent)
	if len(matches) > 0 {
		t.Errorf("cgroups left: %v", matches)
	}
	if _, err := os.Stat("/sys/class/net/" + bridge); err == nil {
		t.Errorf("bridge %s left", bridge)
	}
}

func execOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
