package runtime

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// DockerOptions configure a private dockerd behind cri-dockerd.
type DockerOptions struct {
	// CNI is the pod network setup cri-dockerd uses; required. cri-dockerd
	// 0.3 speaks CNI up to 1.0.0: write the chain with that cniVersion.
	CNI *CNI
}

// Docker is a private dockerd (Debian's docker.io) and a cri-dockerd in
// front of it.
type Docker struct {
	tools      Tools
	in         *instance
	dockerd    *Daemon
	criDockerd *Daemon

	// Socket is dockerd's API socket; CRISocket is cri-dockerd's.
	Socket    string
	CRISocket string
	DataRoot  string
	ExecRoot  string
	// CgroupParent is the cgroup of every container and pod.
	CgroupParent string
	// Crictl talks to cri-dockerd.
	Crictl *Crictl
}

// runcWrapper is the name dockerd knows test/cmd/oomclamp by.
const runcWrapper = "lg-runc"

// dockerdScript runs dockerd in a mount namespace of its own in which /run,
// /opt and /etc/docker are private: dockerd writes /etc/docker/key.json and
// /run/docker/plugins whatever its flags say, the containerd 1.6 it starts
// creates /opt/containerd, and that containerd's shims put their sockets in
// /run/containerd/s. Its mounts (overlay rootfs, shm) die with the namespace.
// Arguments: OPT_DIR ETC_DOCKER_DIR dockerd ARGS...
const dockerdScript = `set -e
[ -d /etc/docker ] || { echo "/etc/docker missing: install docker.io" >&2; exit 1; }
mount -t tmpfs -o mode=0755 tmpfs /run
mount --bind "$1" /opt
mount --bind "$2" /etc/docker
shift 2
exec "$@"`

// StartDocker starts dockerd and cri-dockerd and registers their teardown:
// pods removed through CRI (CNI DEL runs), containers removed, both daemons
// stopped, then whatever is left of the instance killed and removed.
func StartDocker(t testing.TB, tools Tools, opts DockerOptions) *Docker {
	t.Helper()
	if opts.CNI == nil {
		t.Fatal("StartDocker: DockerOptions.CNI is required")
	}
	in := newInstance(t, "dkr")
	d := &Docker{
		tools:        tools,
		in:           in,
		Socket:       in.path("docker.sock"),
		CRISocket:    in.path("cri-dockerd.sock"),
		DataRoot:     in.path("data"),
		ExecRoot:     in.path("exec"),
		CgroupParent: in.cgroupParent,
	}
	t.Cleanup(func() { d.teardown(t) })
	for _, dir := range []string{d.DataRoot, d.ExecRoot, in.path("opt"), in.path("etc-docker"), in.path("cri-dockerd"), in.path("tmp")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// An empty config file: the machine's /etc/docker/daemon.json is not read.
	conf := in.path("daemon.json")
	if err := os.WriteFile(conf, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR=" + in.path("tmp")}
	argv := []string{tools.Unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", dockerdScript, "sh",
		in.path("opt"), in.path("etc-docker"),
		tools.Dockerd,
		"--config-file", conf,
		"--data-root", d.DataRoot,
		"--exec-root", d.ExecRoot,
		"--pidfile", in.path("dockerd.pid"),
		"-H", "unix://" + d.Socket,
		// The host netns is the machine's: no docker0, no iptables rules,
		// no sysctl.
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
		"--exec-opt", "native.cgroupdriver=cgroupfs",
		"--cgroup-parent", d.CgroupParent,
		"--storage-driver", "overlay2",
		"--add-runtime", runcWrapper + "=" + tools.TestBinary("oomclamp"),
		"--default-runtime", runcWrapper,
		"--log-level", "debug",
	}
	var err error
	if d.dockerd, err = StartDaemon("dockerd", in.path("dockerd.log"), argv, env); err != nil {
		t.Fatal(err)
	}
	err = d.dockerd.WaitUntil(60*time.Second, func() error {
		_, err := d.Docker("version", "--format", "{{.Server.Version}}")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	cni := opts.CNI
	argv = []string{tools.CRIDockerd,
		"--container-runtime-endpoint", "unix://" + d.CRISocket,
		"--docker-endpoint", "unix://" + d.Socket,
		"--network-plugin", "cni",
		"--cni-bin-dir", cni.BinDir,
		"--cni-conf-dir", cni.ConfDir,
		"--cni-cache-dir", cni.CacheDir,
		"--pod-infra-container-image", PauseImage,
		"--cri-dockerd-root-directory", in.path("cri-dockerd"),
		"--streaming-bind-addr", "127.0.0.1:0",
		"--hairpin-mode", "none",
		"--log-level", "debug",
	}
	if d.criDockerd, err = StartDaemon("cri-dockerd", in.path("cri-dockerd.log"), argv, env); err != nil {
		t.Fatal(err)
	}
	if d.Crictl, err = newCrictl(tools.Crictl, d.CRISocket, in.dir, in.cgroupParent); err != nil {
		t.Fatal(err)
	}
	err = d.criDockerd.WaitUntil(60*time.Second, func() error {
		_, err := d.Crictl.Run("version")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Docker runs docker.io's CLI against the private dockerd.
func (d *Docker) Docker(args ...string) (string, error) {
	cmd := exec.Command(d.tools.Docker, append([]string{"-H", "unix://" + d.Socket}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + d.in.dir, "DOCKER_CONFIG=" + d.in.path("docker-cli")}
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return string(out), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return string(out), nil
}

// LoadImages loads docker-save archives.
func (d *Docker) LoadImages(t testing.TB, imgs ...Image) {
	t.Helper()
	for _, img := range imgs {
		if _, err := d.Docker("load", "-i", img.DockerArchive); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Docker("image", "inspect", img.Name); err != nil {
			t.Fatalf("image %s not there after docker load: %v", img.Name, err)
		}
	}
}

// SandboxPID is the PID of a pod's sandbox container (cri-dockerd's pod ID
// is that container's ID), 0 once it is not running.
func (d *Docker) SandboxPID(t testing.TB, podID string) int {
	t.Helper()
	out, err := d.Docker("inspect", "--format", "{{.State.Pid}}", podID)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("docker inspect %s: pid %q: %v", podID, out, err)
	}
	return pid
}

// LogTails returns the last n lines of dockerd's and cri-dockerd's logs.
func (d *Docker) LogTails(n int) string {
	return "dockerd:\n" + d.dockerd.Tail(n) + "\ncri-dockerd:\n" + d.criDockerd.Tail(n)
}

func (d *Docker) teardown(t testing.TB) {
	if t.Failed() {
		for _, dm := range []*Daemon{d.dockerd, d.criDockerd} {
			if dm != nil {
				t.Logf("%s log (last 40 lines):\n%s", dm.Name(), dm.Tail(40))
			}
		}
	}
	if d.criDockerd != nil && !d.criDockerd.Exited() && d.Crictl != nil {
		if err := d.Crictl.RemoveAllPods(); err != nil {
			t.Logf("teardown: %v", err)
		}
	}
	if d.criDockerd != nil {
		if err := d.criDockerd.Stop(10 * time.Second); err != nil {
			t.Errorf("teardown: %v", err)
		}
	}
	if d.dockerd != nil && !d.dockerd.Exited() {
		if out, err := d.Docker("ps", "-aq"); err == nil && strings.TrimSpace(out) != "" {
			if _, err := d.Docker(append([]string{"rm", "-f"}, strings.Fields(out)...)...); err != nil {
				t.Logf("teardown: %v", err)
			}
		}
	}
	if d.dockerd != nil {
		if err := d.dockerd.Stop(30 * time.Second); err != nil {
			t.Errorf("teardown: %v", err)
		}
	}
	if err := d.in.teardown(); err != nil {
		t.Errorf("teardown of %s: %v", d.in.dir, err)
	}
}
