package runtime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Crictl drives one runtime's CRI endpoint with the real crictl, as kubelet
// would (same gRPC API). Pods it starts get the instance's cgroup parent and
// log dir, so teardown finds everything they created.
type Crictl struct {
	Bin      string
	Endpoint string // unix:///...
	// ConfigFile is crictl's own config (never /etc/crictl.yaml).
	ConfigFile string
	// CgroupParent and LogDir go into every pod's config.
	CgroupParent string
	LogDir       string
	// Dir holds the pod and container configs written for crictl.
	Dir string
	// Timeout is crictl's per-request timeout.
	Timeout time.Duration
}

func newCrictl(bin, socket, dir, cgroupParent string) (*Crictl, error) {
	c := &Crictl{
		Bin:          bin,
		Endpoint:     "unix://" + socket,
		ConfigFile:   filepath.Join(dir, "crictl.yaml"),
		CgroupParent: cgroupParent,
		LogDir:       filepath.Join(dir, "pod-logs"),
		Dir:          filepath.Join(dir, "crictl"),
		Timeout:      60 * time.Second,
	}
	for _, d := range []string{c.LogDir, c.Dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	conf := fmt.Sprintf("runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: %d\ndebug: false\npull-image-on-create: false\n",
		c.Endpoint, c.Endpoint, int(c.Timeout.Seconds()))
	return c, os.WriteFile(c.ConfigFile, []byte(conf), 0o644)
}

// Run runs `crictl args...` and returns its stdout; the error carries stderr.
func (c *Crictl) Run(args ...string) (string, error) {
	full := append([]string{"--config", c.ConfigFile, "-r", c.Endpoint, "-i", c.Endpoint,
		"--timeout", c.Timeout.String()}, args...)
	cmd := exec.Command(c.Bin, full...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("crictl %s (after %v): %w: %s", strings.Join(args, " "),
			time.Since(start).Round(time.Millisecond), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// MustRun is Run that fails the test on error.
func (c *Crictl) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.Run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// PodSpec is the part of a CRI PodSandboxConfig the tests choose.
type PodSpec struct {
	Name      string // default: a random "pod-<n>"
	Namespace string // default: "leakguard-test"
	UID       string // default: random
	// HostNetwork puts the pod in the host netns (no CNI call).
	HostNetwork bool
	// Privileged allows privileged containers in the pod.
	Privileged  bool
	Labels      map[string]string
	Annotations map[string]string
}

// Pod is a sandbox started with RunPod.
type Pod struct {
	ID         string
	Spec       PodSpec
	ConfigFile string
}

func (c *Crictl) podConfig(spec PodSpec) map[string]any {
	network := 0 // POD
	if spec.HostNetwork {
		network = 2 // NODE
	}
	return map[string]any{
		"metadata": map[string]any{
			"name": spec.Name, "namespace": spec.Namespace, "uid": spec.UID, "attempt": 0,
		},
		"hostname":      spec.Name,
		"log_directory": filepath.Join(c.LogDir, spec.Namespace+"_"+spec.Name+"_"+spec.UID),
		"labels":        spec.Labels,
		"annotations":   spec.Annotations,
		"linux": map[string]any{
			"cgroup_parent": c.CgroupParent,
			"security_context": map[string]any{
				"privileged":        spec.Privileged,
				"namespace_options": map[string]any{"network": network},
			},
		},
	}
}

// RunPod starts a pod sandbox (`crictl runp`): with a pod network, that is
// the runtime's CNI ADD.
func (c *Crictl) RunPod(t testing.TB, spec PodSpec) *Pod {
	t.Helper()
	if spec.Name == "" {
		spec.Name = fmt.Sprintf("pod-%d", rand.IntN(1e6))
	}
	if spec.Namespace == "" {
		spec.Namespace = "leakguard-test"
	}
	if spec.UID == "" {
		spec.UID = fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", rand.Uint32(), rand.IntN(1<<16), rand.IntN(1<<12), rand.IntN(1<<12), rand.Uint64()&(1<<48-1))
	}
	p := &Pod{Spec: spec, ConfigFile: filepath.Join(c.Dir, "pod-"+spec.Name+"-"+spec.UID+".json")}
	if err := os.MkdirAll(c.podConfig(spec)["log_directory"].(string), 0o755); err != nil {
		t.Fatal(err)
	}
	writeJSON(t, p.ConfigFile, c.podConfig(spec))
	p.ID = strings.TrimSpace(c.MustRun(t, "runp", p.ConfigFile))
	return p
}

// PodStatus is what the tests read of `crictl inspectp`.
type PodStatus struct {
	ID    string
	State string // SANDBOX_READY or SANDBOX_NOTREADY
	IP    string
	// PID and NetnsPath come from the runtime's verbose info (containerd
	// gives them; cri-dockerd does not: ask docker).
	PID       int
	NetnsPath string
}

// InspectPod returns the pod's status.
func (c *Crictl) InspectPod(t testing.TB, id string) PodStatus {
	t.Helper()
	out := c.MustRun(t, "inspectp", "-o", "json", id)
	var raw struct {
		Status struct {
			ID      string `json:"id"`
			State   string `json:"state"`
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
		Info struct {
			PID         int `json:"pid"`
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("parse crictl inspectp %s: %v\n%s", id, err, out)
	}
	st := PodStatus{ID: raw.Status.ID, State: raw.Status.State, IP: raw.Status.Network.IP, PID: raw.Info.PID}
	for _, ns := range raw.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			st.NetnsPath = ns.Path
		}
	}
	return st
}

// StopPod runs `crictl stopp` (the runtime's teardown: CNI DEL).
func (c *Crictl) StopPod(id string) error {
	_, err := c.Run("stopp", id)
	return err
}

// RemovePod runs `crictl rmp`.
func (c *Crictl) RemovePod(id string) error {
	_, err := c.Run("rmp", id)
	return err
}

// RemoveAllPods stops and removes every pod (`crictl rmp --all --force`).
func (c *Crictl) RemoveAllPods() error {
	_, err := c.Run("rmp", "--all", "--force")
	return err
}

// ContainerSpec is the part of a CRI ContainerConfig the tests choose.
type ContainerSpec struct {
	Name       string // default "c"
	Image      string // default BusyboxImage
	Command    []string
	Args       []string
	Privileged bool
	Env        map[string]string
}

// CreateContainer creates a container in pod (`crictl create`) and returns
// its ID.
func (c *Crictl) CreateContainer(t testing.TB, pod *Pod, spec ContainerSpec) string {
	t.Helper()
	if spec.Name == "" {
		spec.Name = "c"
	}
	if spec.Image == "" {
		spec.Image = BusyboxImage
	}
	var env []map[string]string
	for k, v := range spec.Env {
		env = append(env, map[string]string{"key": k, "value": v})
	}
	conf := map[string]any{
		"metadata": map[string]any{"name": spec.Name, "attempt": 0},
		"image":    map[string]any{"image": spec.Image},
		"command":  spec.Command,
		"args":     spec.Args,
		"envs":     env,
		"log_path": spec.Name + ".log",
		"linux": map[string]any{
			"security_context": map[string]any{"privileged": spec.Privileged},
		},
	}
	file := filepath.Join(c.Dir, fmt.Sprintf("ctr-%s-%s.json", pod.ID[:12], spec.Name))
	writeJSON(t, file, conf)
	return strings.TrimSpace(c.MustRun(t, "create", pod.ID, file, pod.ConfigFile))
}

// RunContainer creates and starts a container.
func (c *Crictl) RunContainer(t testing.TB, pod *Pod, spec ContainerSpec) string {
	t.Helper()
	id := c.CreateContainer(t, pod, spec)
	c.MustRun(t, "start", id)
	return id
}

// Exec runs a command in a running container and returns its stdout.
func (c *Crictl) Exec(containerID string, cmd ...string) (string, error) {
	return c.Run(append([]string{"exec", containerID}, cmd...)...)
}

// Condition is one of the runtime's status conditions (RuntimeReady,
// NetworkReady).
type Condition struct {
	Type    string `json:"type"`
	Status  bool   `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// Conditions returns the runtime's status conditions (`crictl info`: the
// CRI Status call, on which containerd runs the CNI STATUS verb).
func (c *Crictl) Conditions(t testing.TB) []Condition {
	t.Helper()
	out := c.MustRun(t, "info", "-o", "json")
	var raw struct {
		Status struct {
			Conditions []Condition `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("parse crictl info: %v\n%s", err, out)
	}
	return raw.Status.Conditions
}

// Condition returns the condition of the given type (fails if absent).
func (c *Crictl) Condition(t testing.TB, typ string) Condition {
	t.Helper()
	conds := c.Conditions(t)
	for _, cond := range conds {
		if cond.Type == typ {
			return cond
		}
	}
	t.Fatalf("crictl info: no %s condition in %+v", typ, conds)
	return Condition{}
}

func writeJSON(t testing.TB, path string, v any) {
	t.Helper()
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}
