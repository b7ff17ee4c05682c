package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// podman runs Podman inside the node netns (its CNI plugins then build the
// bridge there, never on the machine) with private storage, run, tmp and
// network config dirs. Debian 12's Podman 4.3 has no netavark: its network
// backend is CNI, configured through a containers.conf of the test's own
// (CONTAINERS_CONF: only that file is read) that names our plugin dirs.
type podman struct {
	t      *testing.T
	e      *env
	global []string
	conf   string
}

func newPodman(t *testing.T, e *env) *podman {
	t.Helper()
	for _, tool := range []string{"podman", "runc", "conmon", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install it (.ci/run installs podman runc util-linux)", tool)
		}
	}
	state := t.TempDir()
	dirs := []string{tools.Leakguard, tools.TestBin, tools.CNIBin}
	quoted := make([]string, len(dirs))
	for i, d := range dirs {
		quoted[i] = fmt.Sprintf("%q", d)
	}
	conf := filepath.Join(state, "containers.conf")
	body := fmt.Sprintf("[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [%s]\nnetwork_config_dir = %q\n",
		strings.Join(quoted, ", "), e.confDir)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return &podman{t: t, e: e, conf: conf, global: []string{
		"--root", filepath.Join(state, "storage"), "--runroot", filepath.Join(state, "run"),
		"--tmpdir", filepath.Join(state, "tmp"), "--events-backend", "none",
		"--runtime", "runc", "--cgroup-manager", "cgroupfs", "--network-config-dir", e.confDir,
	}}
}

func (pm *podman) run(args ...string) (string, error) {
	argv := append([]string{"--net=" + pm.e.node.Path(), "--", "podman"}, pm.global...)
	cmd := exec.Command("nsenter", append(argv, args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+pm.conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func (pm *podman) must(args ...string) string {
	pm.t.Helper()
	out, err := pm.run(args...)
	if err != nil {
		pm.t.Fatal(err)
	}
	return out
}

// busyboxRootfs is a rootfs of the static busybox with the applets the
// container uses.
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("static busybox missing (apt-get install busybox-static): %v", err)
	}
	root := t.TempDir()
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sh", "ip", "sleep"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestPodmanWrapped: Podman runs a container on the bridge wrapper example
// (as the one-element .conflist Podman reads, at cniVersion 1.0.0: Podman
// 4.3's libcni rejects 1.1.0 results). The container has the IP the wrapper
// printed for bridge, leakguard recorded and pinned the attachment, bridge's
// masquerade chain is in place; `podman rm -f` runs the wrapper's DEL with
// the netns alive, which runs bridge's own DEL: host veth, IP, masquerade
// chain, record and pin all gone.
func TestPodmanWrapped(t *testing.T) {
	e := newEnvWith(t, wrappedChains[0], envOptions{version: "1.0.0", asList: true})
	pm := newPodman(t, e)
	name := fmt.Sprintf("lg-wrap-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	t.Cleanup(func() { _, _ = pm.run("rm", "--force", "--ignore", "--time", "0", name) })

	id := pm.must("run", "--detach", "--name", name, "--network", e.network,
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		"--rootfs", busyboxRootfs(t), "/bin/sleep", "600")
	t.Cleanup(func() {
		// libcni's result cache (Podman cannot move it); gone on a clean removal.
		matches, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", e.network+"-"+id+"-*"))
		for _, m := range matches {
			_ = os.Remove(m)
		}
	})
	var networks map[string]struct {
		IPAddress string
	}
	if err := json.Unmarshal([]byte(pm.must("inspect", "--format", "{{json .NetworkSettings.Networks}}", name)), &networks); err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP(networks[e.network].IPAddress)
	if ip == nil {
		t.Fatalf("podman reports no IP on %s: %+v", e.network, networks)
	}
	if inside := pm.must("exec", name, "/bin/ip", "-4", "addr", "show", "eth0"); !strings.Contains(inside, "inet "+ip.String()+"/16") {
		t.Fatalf("container's eth0 lacks %s:\n%s", ip, inside)
	}
	if !e.ipHeld(ip) {
		t.Errorf("host-local does not hold %s", ip)
	}

	recPath := filepath.Join(e.stateDir, e.network+"_"+id+"_eth0.json")
	raw, err := os.ReadFile(recPath)
	if err != nil {
		t.Fatalf("no leakguard record for the container: %v", err)
	}
	var rec struct {
		IPs       []string `json:"ips"`
		HostLinks []struct {
			Name string `json:"name"`
		} `json:"hostLinks"`
		Delegate json.RawMessage `json:"delegate"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	if len(rec.IPs) != 1 || rec.IPs[0] != ip.String()+"/16" || len(rec.HostLinks) != 1 || len(rec.Delegate) == 0 {
		t.Fatalf("record does not describe the container (IP %s, one host veth, the delegate):\n%s", ip, raw)
	}
	hostVeth := rec.HostLinks[0].Name
	if _, err := e.nodeH.LinkByName(hostVeth); err != nil {
		t.Fatalf("host veth %s of the record: %v", hostVeth, err)
	}
	pin := e.pinPathOf(id, "eth0")
	if left := e.pinsLeft(); !strings.Contains(strings.Join(left, "\n"), "mount "+pin) {
		t.Errorf("container netns not pinned at %s: %v", pin, left)
	}
	if rules := e.natRulesOf(id); len(rules) < 3 {
		t.Errorf("want bridge's masquerade chain for the container, got:\n%s", strings.Join(rules, "\n"))
	}

	pm.must("rm", "--force", "--time", "0", name)
	if _, err := os.Stat(recPath); !os.IsNotExist(err) {
		t.Errorf("record survived the container's removal: %v", err)
	}
	if left := e.stateFilesOf(id); len(left) != 0 {
		t.Errorf("state left: %v", left)
	}
	if _, err := e.nodeH.LinkByName(hostVeth); err == nil {
		t.Errorf("host veth %s survived the container's removal", hostVeth)
	}
	if e.ipHeld(ip) {
		t.Errorf("host-local still holds %s", ip)
	}
	if rules := e.natRulesOf(id); len(rules) != 0 {
		t.Errorf("masquerade rules survived:\n%s", strings.Join(rules, "\n"))
	}
	if left := e.pinsLeft(); len(left) != 0 {
		t.Errorf("pins left: %v", left)
	}
	dels := e.loggedOf(id, "DEL", "main plugin's DEL done")
	if len(dels) == 0 || dels[0]["netns"] != "alive" || dels[0]["delegate"] != "bridge" {
		t.Errorf("want bridge's DEL run by the wrapper with the netns alive, log says %v", dels)
	}
}
