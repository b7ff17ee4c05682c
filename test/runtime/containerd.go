package runtime

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ContainerdOptions configure a private containerd.
type ContainerdOptions struct {
	// CNI is the pod network setup (bin dir, conf dir); required.
	CNI *CNI
	// NRI configures containerd's NRI plugin; its socket and plugin dirs are
	// always private (see Containerd's NRI fields).
	NRI NRIOptions
	// ExtraConfig is TOML appended to the generated config (tables the
	// harness does not write, e.g. an extra runtime handler).
	ExtraConfig string
	// RuntimeHandlerOptions are extra keys of the runc handler's table
	// (e.g. base_runtime_spec = '/path/spec.json').
	RuntimeHandlerOptions map[string]string
}

// NRIOptions configure containerd's NRI.
type NRIOptions struct {
	// Disable turns NRI off (containerd 2.x enables it by default).
	Disable bool
	// RequestTimeout and RegistrationTimeout, when set, override containerd's
	// defaults (2 s and 5 s).
	RequestTimeout      time.Duration
	RegistrationTimeout time.Duration
}

// Containerd is a private containerd 2.x with its CRI plugin.
type Containerd struct {
	tools Tools
	in    *instance
	opts  ContainerdOptions
	d     *Daemon

	// Dir is the instance dir: whatever a test puts below it (say, a
	// kubelet's root dir) is torn down with the instance, even after a
	// killed run (processes naming it are killed, mounts under it undone).
	Dir        string
	Address    string // containerd's gRPC socket (CRI is served there too)
	ConfigFile string
	LogFile    string
	Root       string
	State      string
	// NRISocket is where external NRI plugins connect (nri.sock alone in
	// its dir, as /var/run/nri/nri.sock: a DaemonSet can mount the dir);
	// NRIPluginDir is
	// containerd's plugin_path (pre-installed plugins NN-name, started by
	// containerd), NRIConfigDir its plugin_config_path.
	NRISocket    string
	NRIPluginDir string
	NRIConfigDir string
	// CgroupParent is the cgroup of every pod started through Crictl.
	CgroupParent string
	// Crictl talks to this containerd's CRI.
	Crictl *Crictl
}

// StartContainerd starts a private containerd and registers its teardown:
// every pod is stopped and removed through CRI (so CNI DEL runs), containerd
// stops, and whatever is left of the instance is killed and removed.
func StartContainerd(t testing.TB, tools Tools, opts ContainerdOptions) *Containerd {
	t.Helper()
	if opts.CNI == nil {
		t.Fatal("StartContainerd: ContainerdOptions.CNI is required")
	}
	// containerd always merges these drop-ins (a default import no config
	// can remove): one could move our sockets or dirs onto the machine's.
	if dropIns, _ := filepath.Glob(containerdDropIns); len(dropIns) > 0 {
		t.Fatalf("containerd would merge the machine's %v into the private config: cannot run a private instance here", dropIns)
	}
	in := newInstance(t, "ctd")
	c := &Containerd{
		tools:        tools,
		in:           in,
		opts:         opts,
		Dir:          in.dir,
		Address:      in.path("containerd.sock"),
		ConfigFile:   in.path("config.toml"),
		LogFile:      in.path("containerd.log"),
		Root:         in.path("root"),
		State:        in.path("state"),
		NRISocket:    in.path("nri", "run", "nri.sock"),
		NRIPluginDir: in.path("nri", "plugins"),
		NRIConfigDir: in.path("nri", "conf"),
		CgroupParent: in.cgroupParent,
	}
	t.Cleanup(func() { c.teardown(t) })
	for _, d := range []string{c.Root, c.State, filepath.Dir(c.NRISocket), c.NRIPluginDir, c.NRIConfigDir, in.path("s"), in.path("opt"), in.path("tmp"), in.path("runc")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(c.ConfigFile, []byte(c.config()), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if c.Crictl, err = newCrictl(tools.Crictl, c.Address, in.dir, in.cgroupParent); err != nil {
		t.Fatal(err)
	}
	c.Start(t)
	return c
}

// containerdDropIns is containerd's default, unremovable import.
const containerdDropIns = "/etc/containerd/conf.d/*.toml"

// q quotes a TOML literal string (paths here never hold a quote).
func q(s string) string {
	if strings.ContainsAny(s, "'\n") {
		panic(fmt.Sprintf("runtime: %q cannot be a TOML literal string", s))
	}
	return "'" + s + "'"
}

// config renders containerd's config (version 4: containerd 2.x). Every
// path containerd would default to on the machine (/var/lib/containerd,
// /run/containerd and its shim sockets, /opt/containerd, /etc/cni/net.d,
// /opt/cni/bin, /var/run/nri, /run/containerd/runc, /var/run/netns) is moved
// into the instance dir.
func (c *Containerd) config() string {
	in := c.in
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("version = 4")
	w("root = %s", q(c.Root))
	w("state = %s", q(c.State))
	w("temp = %s", q(in.path("tmp")))
	// Snapshotters that cannot work here, and tracing: less noise.
	w("disabled_plugins = ['io.containerd.snapshotter.v1.btrfs', 'io.containerd.snapshotter.v1.zfs', 'io.containerd.snapshotter.v1.devmapper', 'io.containerd.snapshotter.v1.blockfile', 'io.containerd.tracing.processor.v1.otlp', 'io.containerd.internal.v1.tracing']")
	w("")
	w("[debug]\n  level = 'debug'")
	w("")
	// Config version 4 moved the listeners into server plugins: a top-level
	// [grpc] address is ignored and containerd would serve on
	// /run/containerd/containerd.sock.
	w("[plugins.'io.containerd.server.v1.grpc']\n  address = %s", q(c.Address))
	w("[plugins.'io.containerd.server.v1.ttrpc']\n  address = %s", q(c.Address+".ttrpc"))
	w("[plugins.'io.containerd.internal.v1.opt']\n  path = %s", q(in.path("opt")))
	w("[plugins.'io.containerd.image-verifier.v1.bindir']\n  bin_dir = %s", q(in.path("image-verifier")))
	// Shim sockets default to /run/containerd/s (max 38 bytes here).
	w("[plugins.'io.containerd.shim.v1.manager']\n  socket_dir = %s", q(in.path("s")))
	w("[plugins.'io.containerd.nri.v1.nri']")
	w("  disable = %t", c.opts.NRI.Disable)
	w("  socket_path = %s", q(c.NRISocket))
	w("  plugin_path = %s", q(c.NRIPluginDir))
	w("  plugin_config_path = %s", q(c.NRIConfigDir))
	if d := c.opts.NRI.RequestTimeout; d > 0 {
		w("  plugin_request_timeout = %s", q(d.String()))
	}
	if d := c.opts.NRI.RegistrationTimeout; d > 0 {
		w("  plugin_registration_timeout = %s", q(d.String()))
	}
	w("")
	w("[plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'overlayfs'")
	w("[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = %s", q(PauseImage))
	w("")
	w("[plugins.'io.containerd.cri.v1.runtime']")
	// No CAP_SYS_RESOURCE on these VMs: without this, runc fails the pause
	// container ("can't get final child's PID from pipe: EOF").
	w("  restrict_oom_score_adj = true")
	w("  disable_apparmor = true")
	w("  netns_mounts_under_state_dir = true")
	w("  cdi_spec_dirs = []")
	w("[plugins.'io.containerd.cri.v1.runtime'.cni]")
	// bin_dirs (a list): the old bin_dir is silently ignored by 2.x.
	w("  bin_dirs = [%s]", q(c.opts.CNI.BinDir))
	w("  conf_dir = %s", q(c.opts.CNI.ConfDir))
	w("  max_conf_num = 1")
	w("[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'runc'")
	w("[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]")
	w("  runtime_type = 'io.containerd.runc.v2'")
	w("  disable_pause_image_pull = true")
	for k, v := range c.opts.RuntimeHandlerOptions {
		w("  %s = %s", k, v)
	}
	w("[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]")
	w("  BinaryName = %s", q(c.tools.Runc))
	w("  Root = %s", q(in.path("runc")))
	w("  SystemdCgroup = false")
	w("")
	w("[plugins.'io.containerd.grpc.v1.cri']\n  stream_server_address = '127.0.0.1'\n  stream_server_port = '0'")
	if c.opts.ExtraConfig != "" {
		w("\n%s", c.opts.ExtraConfig)
	}
	return b.String()
}

// Start starts containerd (again, after Stop: its state is kept) and waits
// until its CRI answers.
func (c *Containerd) Start(t testing.TB) {
	t.Helper()
	if c.d != nil && !c.d.Exited() {
		t.Fatal("containerd already running")
	}
	// The shim is found next to containerd in $PATH; nothing of the
	// machine's containerd may come first.
	env := []string{
		"PATH=" + filepath.Dir(c.tools.Containerd) + ":/usr/sbin:/usr/bin:/sbin:/bin",
		"TMPDIR=" + c.in.path("tmp"),
	}
	d, err := StartDaemon("containerd", c.LogFile, []string{c.tools.Containerd, "--config", c.ConfigFile}, env)
	if err != nil {
		t.Fatal(err)
	}
	c.d = d
	err = d.WaitUntil(60*time.Second, func() error {
		if _, err := os.Stat(c.Address); err != nil {
			return err
		}
		_, err := c.Crictl.Run("version")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Stop stops containerd (SIGTERM), leaving pods, shims and state in place,
// as a containerd restart on a node does.
func (c *Containerd) Stop(t testing.TB) {
	t.Helper()
	if err := c.d.Stop(20 * time.Second); err != nil {
		t.Error(err)
	}
}

// PID is containerd's process ID.
func (c *Containerd) PID() int { return c.d.PID() }

// Ctr runs `ctr --address ... -n k8s.io args...`.
func (c *Containerd) Ctr(args ...string) (string, error) {
	full := append([]string{"--address", c.Address, "--namespace", "k8s.io"}, args...)
	out, err := exec.Command(c.tools.Ctr, full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ImportImages imports OCI archives into the CRI namespace (k8s.io).
func (c *Containerd) ImportImages(t testing.TB, imgs ...Image) {
	t.Helper()
	for _, img := range imgs {
		if _, err := c.Ctr("images", "import", "--local", img.OCIArchive); err != nil {
			t.Fatal(err)
		}
		if out, err := c.Crictl.Run("inspecti", img.Name); err != nil {
			t.Fatalf("image %s not seen through CRI after import: %v\n%s", img.Name, err, out)
		}
	}
}

// LogTail returns the last n lines of containerd's log.
func (c *Containerd) LogTail(n int) string { return c.d.Tail(n) }

func (c *Containerd) teardown(t testing.TB) {
	if t.Failed() && c.d != nil {
		t.Logf("containerd log (last 60 lines):\n%s", c.d.Tail(60))
	}
	if c.d != nil && !c.d.Exited() && c.Crictl != nil {
		// Orderly first: the runtime's own teardown runs CNI DEL.
		if err := c.Crictl.RemoveAllPods(); err != nil {
			t.Logf("teardown: %v", err)
		}
	}
	if c.d != nil {
		if err := c.d.Stop(20 * time.Second); err != nil {
			t.Errorf("teardown: %v", err)
		}
	}
	if err := c.in.teardown(); err != nil {
		t.Errorf("teardown of %s: %v", c.in.dir, err)
	}
}
