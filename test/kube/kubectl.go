package kube

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/leakguard/leakguard/test/runtime"
)

// Kubectl runs kubectl against the cluster (its own KUBECONFIG, cache dir
// and HOME: nothing of the machine's ~/.kube is read or written) and returns
// its stdout; the error carries stderr.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	return c.KubectlStdin("", args...)
}

// KubectlEnv is the environment Kubectl runs kubectl with.
func (c *Cluster) KubectlEnv() []string {
	return []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + c.path("home"),
		"KUBECONFIG=" + c.Kubeconfig,
		"KUBECACHEDIR=" + c.path("kubectl-cache"),
	}
}

// KubectlStdin is Kubectl with stdin (say, `apply -f -`).
func (c *Cluster) KubectlStdin(stdin string, args ...string) (string, error) {
	cmd := exec.Command(c.Tools.Kubectl, args...)
	cmd.Env = c.KubectlEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// MustKubectl is Kubectl that fails the test on error.
func (c *Cluster) MustKubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.Kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ImportImage imports an OCI or docker-save image archive into the
// containerd's k8s.io namespace (where kubelet's CRI looks).
func (c *Cluster) ImportImage(t testing.TB, archive string) {
	t.Helper()
	if _, err := c.Containerd.Ctr("images", "import", "--local", archive); err != nil {
		t.Fatal(err)
	}
}

// Node is what the tests read of a Node.
type Node struct {
	Spec struct {
		PodCIDR string `json:"podCIDR"`
		Taints  []struct {
			Key    string `json:"key"`
			Effect string `json:"effect"`
		} `json:"taints"`
	} `json:"spec"`
	Status struct {
		Conditions []Condition `json:"conditions"`
	} `json:"status"`
}

// Condition is a node or pod condition.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func conditionTrue(conds []Condition, typ string) bool {
	for _, c := range conds {
		if c.Type == typ {
			return c.Status == "True"
		}
	}
	return false
}

// WaitNodeReady waits until the node is Ready and has no NoSchedule taint
// left (the node lifecycle controller lifts not-ready once it is Ready).
func (c *Cluster) WaitNodeReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	err := c.poll(timeout, func() error {
		var n Node
		if err := c.GetJSON("/api/v1/nodes/"+NodeName, &n); err != nil {
			return err
		}
		if !conditionTrue(n.Status.Conditions, "Ready") {
			return fmt.Errorf("node not Ready: %+v", n.Status.Conditions)
		}
		for _, taint := range n.Spec.Taints {
			if taint.Effect == "NoSchedule" || taint.Effect == "NoExecute" {
				return fmt.Errorf("node tainted %s:%s", taint.Key, taint.Effect)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("node %s: %v", NodeName, err)
	}
}

func (c *Cluster) waitDefaultServiceAccount(t testing.TB, timeout time.Duration) {
	t.Helper()
	err := c.poll(timeout, func() error {
		_, err := c.Get("/api/v1/namespaces/default/serviceaccounts/default")
		return err
	})
	if err != nil {
		t.Fatalf("default service account: %v", err)
	}
}

// poll runs f every 100 ms until it succeeds or timeout; a daemon of the
// cluster that exits ends the wait with its log.
func (c *Cluster) poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		for _, d := range c.daemons {
			if d.Exited() {
				return fmt.Errorf("%w; %s exited (%v):\n%s", err, d.Name(), d.Err(), d.Tail(40))
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Pod is what the tests read of a Pod.
type Pod struct {
	Metadata struct {
		Name              string            `json:"name"`
		Namespace         string            `json:"namespace"`
		UID               string            `json:"uid"`
		Labels            map[string]string `json:"labels"`
		DeletionTimestamp string            `json:"deletionTimestamp"`
	} `json:"metadata"`
	Spec struct {
		NodeName    string `json:"nodeName"`
		HostNetwork bool   `json:"hostNetwork"`
	} `json:"spec"`
	Status struct {
		Phase             string      `json:"phase"`
		PodIP             string      `json:"podIP"`
		Conditions        []Condition `json:"conditions"`
		ContainerStatuses []struct {
			Name         string `json:"name"`
			Ready        bool   `json:"ready"`
			RestartCount int    `json:"restartCount"`
			State        map[string]struct {
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"state"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

// Ready reports the pod's Ready condition.
func (p Pod) Ready() bool { return conditionTrue(p.Status.Conditions, "Ready") }

// GetPod reads a pod through the API.
func (c *Cluster) GetPod(namespace, name string) (Pod, error) {
	var p Pod
	err := c.GetJSON(fmt.Sprintf("/api/v1/namespaces/%s/pods/%s", namespace, name), &p)
	return p, err
}

// ListPods lists a namespace's pods matching a label selector ("" for all).
func (c *Cluster) ListPods(namespace, selector string) ([]Pod, error) {
	var list struct {
		Items []Pod `json:"items"`
	}
	path := fmt.Sprintf("/api/v1/namespaces/%s/pods", namespace)
	if selector != "" {
		path += "?labelSelector=" + selector
	}
	err := c.GetJSON(path, &list)
	return list.Items, err
}

// WaitPod waits until the pod satisfies ok (ok's error says why not yet).
func (c *Cluster) WaitPod(t testing.TB, namespace, name string, timeout time.Duration, ok func(Pod) error) Pod {
	t.Helper()
	var p Pod
	err := c.poll(timeout, func() error {
		var err error
		if p, err = c.GetPod(namespace, name); err != nil {
			return err
		}
		return ok(p)
	})
	if err != nil {
		out, _ := c.Kubectl("describe", "pod", "-n", namespace, name)
		t.Fatalf("pod %s/%s: %v\n%s", namespace, name, err, out)
	}
	return p
}

// PodRunningReady is a WaitPod condition: Running and Ready.
func PodRunningReady(p Pod) error {
	if p.Status.Phase != "Running" || !p.Ready() {
		return fmt.Errorf("phase %s, ready %t, containers %+v", p.Status.Phase, p.Ready(), p.Status.ContainerStatuses)
	}
	return nil
}

// WaitPodGone waits until the pod is deleted from the API.
func (c *Cluster) WaitPodGone(t testing.TB, namespace, name string, timeout time.Duration) {
	t.Helper()
	err := c.poll(timeout, func() error {
		_, err := c.GetPod(namespace, name)
		if err != nil && strings.Contains(err.Error(), "404 Not Found") {
			return nil
		}
		if err == nil {
			return fmt.Errorf("pod %s/%s still there", namespace, name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Sandbox returns the CRI pod sandbox of a pod (by its UID), as containerd
// reports it (netns path, pause pid). The newest when several.
func (c *Cluster) Sandbox(t testing.TB, podUID string) runtime.PodStatus {
	t.Helper()
	out := c.Containerd.Crictl.MustRun(t, "pods", "-q", "--label", "io.kubernetes.pod.uid="+podUID, "--latest")
	id := strings.TrimSpace(out)
	if id == "" {
		t.Fatalf("no sandbox for pod UID %s", podUID)
	}
	return c.Containerd.Crictl.InspectPod(t, id)
}
