package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

var (
	testTools  Tools
	testImages TestImages
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		os.Stderr.WriteString("test/runtime: must run as root (it starts containerd and dockerd); run `sudo make test`\n")
		return 1
	}
	scratch, err := os.MkdirTemp("", "leakguard-runtime-")
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	defer os.RemoveAll(scratch)
	if testTools, err = FindTools(scratch); err == nil {
		testImages, err = BuildTestImages(scratch, testTools)
	}
	if err != nil {
		os.Stderr.WriteString("test/runtime: " + err.Error() + "\n")
		return 1
	}
	return m.Run()
}

// left is what an instance could leave on the machine.
type left struct {
	dir, cgroupParent string
	net               *Network
}

// assertNothingLeft checks that nothing the instance made survives it.
func assertNothingLeft(t *testing.T, l left) {
	t.Helper()
	if _, err := os.Lstat(l.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("instance dir %s still there (%v)", l.dir, err)
	}
	in := &instance{dir: l.dir, cgroupParent: l.cgroupParent}
	if pids := in.processes(); len(pids) > 0 {
		t.Errorf("processes of the instance still run: %v", pids)
	}
	mounts, err := mountPoints()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if strings.HasPrefix(m, l.dir) {
			t.Errorf("mount %s still there", m)
		}
	}
	if cgs, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", l.cgroupParent)); len(cgs) > 0 {
		t.Errorf("cgroups still there: %v", cgs)
	}
	if _, err := netlinksafe.LinkByName(l.net.Bridge); !errors.As(err, new(netlink.LinkNotFoundError)) {
		t.Errorf("bridge %s still there (%v)", l.net.Bridge, err)
	}
	if cached, _ := filepath.Glob(filepath.Join(resultCacheDir, l.net.Name+"-*")); len(cached) > 0 {
		t.Errorf("CNI result cache entries still there: %v", cached)
	}
}

// A test that fails with a pod, a running container and a held netns still
// up: its cleanup leaves nothing behind (daemons, shims, containers, mounts,
// cgroups, bridge, veths, cache entries, dirs).
func TestContainerdTeardownLeavesNothing(t *testing.T) {
	var l left
	t.Run("instance", func(t *testing.T) {
		l.net = NewNetwork(t)
		cni := NewCNI(t, testTools, l.net, t.TempDir(), ChainOptions{Leakguard: true})
		c := StartContainerd(t, testTools, ContainerdOptions{CNI: cni})
		l.dir, l.cgroupParent = c.in.dir, c.CgroupParent
		c.ImportImages(t, testImages.Pause, testImages.Busybox)
		pod := c.Crictl.RunPod(t, PodSpec{})
		id := c.Crictl.RunContainer(t, pod, ContainerSpec{Command: []string{"sleep", "3600"}})
		if out, err := c.Crictl.Exec(id, "cat", "/etc/passwd"); err != nil || !strings.HasPrefix(out, "root:") {
			t.Fatalf("exec in the busybox container: %q, %v", out, err)
		}
		st := c.Crictl.InspectPod(t, pod.ID)
		HoldNetns(t, testTools, st.NetnsPath)
		if len(c.in.processes()) < 3 {
			t.Fatalf("want containerd, a shim and the containers among the instance's processes, got %v", c.in.processes())
		}
	})
	assertNothingLeft(t, l)
}

func TestDockerTeardownLeavesNothing(t *testing.T) {
	var l left
	t.Run("instance", func(t *testing.T) {
		l.net = NewNetwork(t)
		cni := NewCNI(t, testTools, l.net, t.TempDir(), ChainOptions{Leakguard: true, CNIVersion: "1.0.0"})
		d := StartDocker(t, testTools, DockerOptions{CNI: cni})
		l.dir, l.cgroupParent = d.in.dir, d.CgroupParent
		d.LoadImages(t, testImages.Pause, testImages.Busybox)
		pod := d.Crictl.RunPod(t, PodSpec{})
		id := d.Crictl.RunContainer(t, pod, ContainerSpec{Command: []string{"sleep", "3600"}})
		if out, err := d.Crictl.Exec(id, "cat", "/etc/passwd"); err != nil || !strings.HasPrefix(out, "root:") {
			t.Fatalf("exec in the busybox container: %q, %v", out, err)
		}
		if _, err := os.Lstat("/etc/docker/key.json"); err == nil {
			t.Errorf("dockerd wrote the machine's /etc/docker/key.json")
		}
		for _, p := range []string{"/opt/containerd", "/run/docker", "/run/containerd"} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("the private dockerd created the machine's %s", p)
			}
		}
	})
	assertNothingLeft(t, l)
}

// The images carry what the runtimes need: an entrypoint (pause), a shell
// and applets (busybox), linux/GOARCH, and extra files.
func TestBuildImages(t *testing.T) {
	spec, err := BusyboxSpec("docker.io/leakguard-test/extra:1", File{Path: "/etc/gssproxy/gssproxy.conf", Data: []byte("[gssproxy]\n")})
	if err != nil {
		t.Fatal(err)
	}
	img, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture == "" || len(cf.Config.Cmd) == 0 {
		t.Fatalf("config: os %q arch %q cmd %v", cf.OS, cf.Architecture, cf.Config.Cmd)
	}
	pause, err := Build(mustPause(t))
	if err != nil {
		t.Fatal(err)
	}
	if pcf, _ := pause.ConfigFile(); len(pcf.Config.Entrypoint) != 1 || pcf.Config.Entrypoint[0] != "/pause" {
		t.Fatalf("pause entrypoint: %v", pcf.Config.Entrypoint)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("want one layer, got %d (%v)", len(layers), err)
	}
	names := layerNames(t, layers[0])
	for _, want := range []string{"bin/busybox", "bin/sh", "etc/gssproxy/", "etc/gssproxy/gssproxy.conf", "tmp/"} {
		if !names[want] {
			t.Errorf("layer lacks %s", want)
		}
	}
}

func mustPause(t *testing.T) ImageSpec {
	t.Helper()
	spec, err := PauseSpec(testTools.TestBinary("pause"))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}
