package cri

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/leakguard/leakguard/test/cnitest"
	"github.com/leakguard/leakguard/test/nritest"
	rt "github.com/leakguard/leakguard/test/runtime"
)

// GssproxyImage carries gssproxy configs that turn kernel NFS support on:
// an el7-style single gssproxy.conf and Debian's 24-nfs-server.conf drop-in.
const GssproxyImage = "docker.io/leakguard-test/gssproxy:1"

// gssConfigs are the image's gssproxy files, path → content.
var gssConfigs map[string][]byte

var (
	nriBinsOnce       sync.Once
	hookBin, nriBin   string
	nriBinsErr        error
	gssConfigsOnce    sync.Once
	gssConfigsErr     error
	kernelNfsdLine    = regexp.MustCompile(`(?im)^[ \t]*kernel_nfsd[ \t]*=[ \t]*(.*?)[ \t]*\r?$`)
	kernelNfsdTrueVal = regexp.MustCompile(`(?i)^(1|on|true|yes)$`)
)

// nriBinaries returns the paths of leakguard-hook and leakguard-nri: from
// $LEAKGUARD_BIN_DIR (make test builds them) or built next to leakguard.
func nriBinaries(t testing.TB) (string, string) {
	t.Helper()
	nriBinsOnce.Do(func() {
		dir := tools.CNI.Leakguard
		hookBin, nriBin = filepath.Join(dir, "leakguard-hook"), filepath.Join(dir, "leakguard-nri")
		if os.Getenv("LEAKGUARD_BIN_DIR") == "" {
			root, err := cnitest.RepoRoot()
			if err != nil {
				nriBinsErr = err
				return
			}
			for _, b := range [][2]string{{hookBin, "./plugins/leakguard-hook"}, {nriBin, "./plugins/leakguard-nri"}} {
				cmd := exec.Command("go", "build", "-o", b[0], b[1])
				cmd.Dir = root
				cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
				if out, err := cmd.CombinedOutput(); err != nil {
					nriBinsErr = fmt.Errorf("go build %s: %w\n%s", b[1], err, out)
					return
				}
			}
		}
		for _, p := range []string{hookBin, nriBin} {
			if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
				nriBinsErr = fmt.Errorf("%s is missing (run `make build`)", p)
			}
		}
	})
	if nriBinsErr != nil {
		t.Fatal(nriBinsErr)
	}
	return hookBin, nriBin
}

// gssproxyImage builds the image into a temp dir of the test: busybox plus
// both configs. The Debian drop-in is the gssproxy package's own file
// (.ci/run installs it).
func gssproxyImage(t testing.TB) rt.Image {
	t.Helper()
	gssConfigsOnce.Do(func() {
		root, err := cnitest.RepoRoot()
		if err != nil {
			gssConfigsErr = err
			return
		}
		el7, err := os.ReadFile(filepath.Join(root, "test", "hook", "testdata", "el7-gssproxy.conf"))
		if err != nil {
			gssConfigsErr = err
			return
		}
		debian, err := os.ReadFile("/etc/gssproxy/24-nfs-server.conf")
		if err != nil {
			gssConfigsErr = fmt.Errorf("Debian's gssproxy drop-in (apt-get install gssproxy): %w", err)
			return
		}
		gssConfigs = map[string][]byte{
			"/etc/gssproxy/gssproxy.conf":      el7,
			"/etc/gssproxy/24-nfs-server.conf": debian,
		}
		for p, data := range gssConfigs {
			if !anyKernelNfsdOn(data) {
				gssConfigsErr = fmt.Errorf("%s does not turn kernel_nfsd on:\n%s", p, data)
			}
		}
	})
	if gssConfigsErr != nil {
		t.Fatal(gssConfigsErr)
	}
	var files []rt.File
	for p, data := range gssConfigs {
		files = append(files, rt.File{Path: p, Data: data})
	}
	spec, err := rt.BusyboxSpec(GssproxyImage, files...)
	if err != nil {
		t.Fatal(err)
	}
	img, err := rt.WriteArchives(t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// anyKernelNfsdOn reports whether a kernel_nfsd line has a value gssproxy
// reads as true.
func anyKernelNfsdOn(conf []byte) bool {
	for _, m := range kernelNfsdLine.FindAllSubmatch(conf, -1) {
		if kernelNfsdTrueVal.Match(m[1]) {
			return true
		}
	}
	return false
}

// nriHarness is a private containerd with NRI, the gssproxy image, and the
// hook's policy file logging to a file the test reads.
type nriHarness struct {
	ctd        *rt.Containerd
	hook, bin  string
	hookPolicy string
	hookLog    string
	pluginLog  string
	// stateFile is where the pre-installed plugin reports (its drop-in's
	// stateFile, moved out of /run).
	stateFile string
}

func startNRIContainerd(t testing.TB) *nriHarness {
	t.Helper()
	h := &nriHarness{}
	h.hook, h.bin = nriBinaries(t)
	img := gssproxyImage(t)
	net := rt.NewNetwork(t)
	cni := rt.NewCNI(t, tools, net, t.TempDir(), rt.ChainOptions{})
	h.ctd = rt.StartContainerd(t, tools, rt.ContainerdOptions{CNI: cni})
	h.ctd.ImportImages(t, images.Pause, images.Busybox, img)
	dir := t.TempDir()
	h.hookLog, h.pluginLog = filepath.Join(dir, "hook.log"), filepath.Join(dir, "nri.log")
	h.stateFile = filepath.Join(dir, "leakguard-nri", "state.json")
	h.hookPolicy = filepath.Join(dir, "hook.json")
	if err := os.WriteFile(h.hookPolicy, fmt.Appendf(nil, `{"mode":"privileged","logFile":%q}`, h.hookLog), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{h.pluginLog, h.hookLog} {
				b, _ := os.ReadFile(f)
				t.Logf("%s:\n%s", f, b)
			}
		}
	})
	return h
}

// preinstall links leakguard-nri into containerd's plugin_path as
// 10-leakguard-nri and writes its drop-in config from the example
// conf/nri/10-leakguard-nri.conf, pointed at the test's hook, policy and
// log. containerd starts it at its next start.
func (h *nriHarness) preinstall(t testing.TB) {
	t.Helper()
	root, err := cnitest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join(root, "conf", "nri", "10-leakguard-nri.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var conf map[string]string
	if err := json.Unmarshal(example, &conf); err != nil {
		t.Fatalf("conf/nri/10-leakguard-nri.conf: %v", err)
	}
	conf["hookPath"], conf["logFile"], conf["hookConfig"], conf["logLevel"] = h.hook, h.pluginLog, h.hookPolicy, "debug"
	if _, ok := conf["stateFile"]; !ok {
		t.Fatal("conf/nri/10-leakguard-nri.conf has no stateFile")
	}
	conf["stateFile"] = h.stateFile
	b, _ := json.Marshal(conf)
	if err := os.WriteFile(filepath.Join(h.ctd.NRIConfigDir, "10-leakguard-nri.conf"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(h.bin, filepath.Join(h.ctd.NRIPluginDir, "10-leakguard-nri")); err != nil {
		t.Fatal(err)
	}
}

// external is a leakguard-nri started by the test, dialing containerd's socket.
type external struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (h *nriHarness) startExternal(t testing.TB) *external {
	t.Helper()
	cmd := exec.Command(h.bin, "--socket", h.ctd.NRISocket, "--hook-path", h.hook, "--hook-config", h.hookPolicy,
		"--log-file", h.pluginLog, "--log-level", "debug")
	cmd.Env = []string{}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e := &external{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(e.done) }()
	t.Cleanup(func() { e.stop(t) })
	return e
}

// stop sends SIGTERM and waits for the exit (exit status 0 expected).
func (e *external) stop(t testing.TB) {
	t.Helper()
	select {
	case <-e.done:
		return
	default:
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
		if code := e.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("leakguard-nri exited %d after SIGTERM, want 0", code)
		}
	case <-time.After(10 * time.Second):
		e.cmd.Process.Kill()
		<-e.done
		t.Error("leakguard-nri did not exit within 10s of SIGTERM")
	}
}

// pluginLines returns the plugin's log records whose msg contains substr.
func (h *nriHarness) pluginLines(t testing.TB, substr string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(h.pluginLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return nritest.Records(t, string(b), substr)
}

// waitJoined waits until containerd has the plugin in its list for the
// n-th time since it started: its NRI logs that after Synchronize.
func (h *nriHarness) waitJoined(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(h.ctd.LogFile)
		if err != nil {
			t.Fatal(err)
		}
		// external plugins: "plugin \"10-leakguard-nri\" connected and synchronized";
		// pre-installed: "pre-installed NRI plugin \"leakguard-nri\" synchronization success".
		got := strings.Count(string(b), `plugin \"10-leakguard-nri\" connected and synchronized`) +
			strings.Count(string(b), `pre-installed NRI plugin \"10-leakguard-nri\" synchronization success`)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not synchronize leakguard-nri %d time(s) within 20s (%d)", n, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hookRuns returns the hook's log records for a container.
func (h *nriHarness) hookRuns(t testing.TB, id string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(h.hookLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, r := range nritest.Records(t, string(b), "leakguard-hook") {
		if r["id"] == id {
			out = append(out, r)
		}
	}
	return out
}

// runGss starts a container of the gssproxy image that sleeps, in pod.
func (h *nriHarness) runGss(t testing.TB, pod *rt.Pod, name string, privileged bool) string {
	t.Helper()
	return h.ctd.Crictl.RunContainer(t, pod, rt.ContainerSpec{
		Name: name, Image: GssproxyImage, Command: []string{"sleep", "3600"}, Privileged: privileged,
	})
}

// specHooks returns the createRuntime and prestart hook paths of a
// container's OCI spec, as containerd stored it (`crictl inspect`).
func (h *nriHarness) specHooks(t testing.TB, id string) []string {
	t.Helper()
	out := h.ctd.Crictl.MustRun(t, "inspect", "-o", "json", id)
	var raw struct {
		Info struct {
			RuntimeSpec struct {
				Hooks struct {
					CreateRuntime []struct{ Path string } `json:"createRuntime"`
					Prestart      []struct{ Path string } `json:"prestart"`
				} `json:"hooks"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("crictl inspect %s: %v", id, err)
	}
	var paths []string
	for _, hk := range raw.Info.RuntimeSpec.Hooks.CreateRuntime {
		paths = append(paths, "createRuntime:"+hk.Path)
	}
	for _, hk := range raw.Info.RuntimeSpec.Hooks.Prestart {
		paths = append(paths, "prestart:"+hk.Path)
	}
	return paths
}

// wantProtected fails unless, inside the running container, every
// kernel_nfsd line of both configs reads as off, and the hook ran once for
// it and edited.
func (h *nriHarness) wantProtected(t testing.TB, id string) {
	t.Helper()
	for p := range gssConfigs {
		out, err := h.ctd.Crictl.Exec(id, "cat", p)
		if err != nil {
			t.Fatal(err)
		}
		lines := kernelNfsdLine.FindAllStringSubmatch(out, -1)
		if len(lines) == 0 {
			t.Fatalf("%s in %s has no kernel_nfsd line left:\n%s", p, id[:12], out)
		}
		for _, l := range lines {
			if kernelNfsdTrueVal.MatchString(l[1]) || !strings.EqualFold(l[1], "no") {
				t.Fatalf("%s in container %s still reads kernel_nfsd = %q:\n%s", p, id[:12], l[1], out)
			}
		}
	}
	runs := h.hookRuns(t, id)
	if len(runs) != 1 || runs[0]["decision"] != "edited" || runs[0]["privileged"] != true {
		t.Fatalf("want the hook to run once for %s and edit, got %v", id[:12], runs)
	}
	if hooks := h.specHooks(t, id); len(hooks) != 1 || hooks[0] != "createRuntime:"+h.hook {
		t.Fatalf("container %s spec hooks %v; want leakguard-hook once, at createRuntime", id[:12], hooks)
	}
}

// wantUntouched fails unless the container sees the image's configs byte
// for byte.
func (h *nriHarness) wantUntouched(t testing.TB, id string) {
	t.Helper()
	for p, want := range gssConfigs {
		out, err := h.ctd.Crictl.Exec(id, "cat", p)
		if err != nil {
			t.Fatal(err)
		}
		if out != string(want) {
			t.Fatalf("%s in container %s changed:\n%s", p, id[:12], out)
		}
	}
}

// waitPluginLine waits for n plugin log records whose msg contains substr.
func waitPluginLine(t testing.TB, h *nriHarness, substr string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(h.pluginLines(t, substr)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("no %d plugin log line(s) %q within 20s", n, substr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
