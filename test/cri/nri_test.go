package cri

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/hook/nristate"
	"github.com/leakguard/leakguard/test/cnitest"
	rt "github.com/leakguard/leakguard/test/runtime"
)

// modes are the two ways leakguard-nri runs under containerd.
var modes = []string{"external", "pre-installed"}

// setUp starts containerd with leakguard-nri in mode and waits until
// containerd has it in its list of plugins.
func setUp(t *testing.T, mode string) (*nriHarness, *external) {
	t.Helper()
	h := startNRIContainerd(t)
	var e *external
	if mode == "pre-installed" {
		h.preinstall(t)
		// containerd starts the plugins in its plugin_path when it starts.
		h.ctd.Stop(t)
		h.ctd.Start(t)
	} else {
		e = h.startExternal(t)
	}
	h.waitJoined(t, 1)
	return h, e
}

// TestNRIProtects: containerd creates containers through CRI (crictl, as
// kubelet does) and leakguard-nri adds leakguard-hook to each, in both ways
// of running. In a privileged container whose image carries an el7-style
// gssproxy.conf and Debian's 24-nfs-server.conf, both with kernel_nfsd on,
// every kernel_nfsd reads as off from inside the running container; an
// unprivileged container of the same image sees the image's files
// unchanged. The hook is in each spec once and ran once per container.
func TestNRIProtects(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			h, _ := setUp(t, mode)
			priv := h.ctd.Crictl.RunPod(t, rt.PodSpec{Privileged: true})
			pc := h.runGss(t, priv, "gss-privileged", true)
			h.wantProtected(t, pc)

			unpriv := h.ctd.Crictl.RunPod(t, rt.PodSpec{})
			uc := h.runGss(t, unpriv, "gss-unprivileged", false)
			h.wantUntouched(t, uc)
			runs := h.hookRuns(t, uc)
			if len(runs) != 1 || runs[0]["decision"] != "skipped" || runs[0]["reason"] != "not privileged" {
				t.Fatalf("unprivileged container: want one hook run that skipped it (not privileged), got %v", runs)
			}
			if hooks := h.specHooks(t, uc); len(hooks) != 1 || hooks[0] != "createRuntime:"+h.hook {
				t.Fatalf("unprivileged container's spec hooks %v; want leakguard-hook once", hooks)
			}

			conn := h.pluginLines(t, "connected to the runtime")
			if len(conn) != 1 || conn[0]["mode"] != mode || conn[0]["runtime"] != "containerd" || conn[0]["id"] != "10-leakguard-nri" {
				t.Fatalf("want one %s connection to containerd as 10-leakguard-nri, got %v", mode, conn)
			}
			created := map[string]bool{}
			for _, l := range h.pluginLines(t, "CreateContainer") {
				if l["msg"] == "CreateContainer" {
					created[l["container"].(string)] = l["hooked"] == true
				}
			}
			if len(created) != 2 || !created[pc] || !created[uc] {
				t.Fatalf("the plugin should have been asked about both containers and hooked both: %v", created)
			}
		})
	}
}

// TestNRIContainerdRestart: containerd restarts, its containers keep
// running. The external plugin reconnects (same process: the container it
// saw is not reported), the pre-installed one is started again by containerd
// (a new process: the earlier container is reported, with the hook in its
// spec). Either way the next container is protected.
func TestNRIContainerdRestart(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			h, _ := setUp(t, mode)
			pod := h.ctd.Crictl.RunPod(t, rt.PodSpec{Privileged: true})
			before := h.runGss(t, pod, "before", true)
			h.wantProtected(t, before)

			h.ctd.Stop(t)
			if mode == "external" {
				waitPluginLine(t, h, "lost the connection to the runtime", 1)
			}
			h.ctd.Start(t)
			h.waitJoined(t, 2)

			conn := h.pluginLines(t, "connected to the runtime")
			if len(conn) != 2 {
				t.Fatalf("want two connections, got %v", conn)
			}
			samePID := conn[0]["pid"] == conn[1]["pid"]
			syncs := h.pluginLines(t, "synchronized with the runtime")
			last := syncs[len(syncs)-1]
			switch mode {
			case "external":
				if !samePID || last["missed"] != 0.0 {
					t.Fatalf("external: want one process reconnecting and nothing missed, got %v and sync %v", conn, last)
				}
			case "pre-installed":
				if samePID || last["missed"] != 1.0 || last["missed_unhooked"] != 0.0 {
					t.Fatalf("pre-installed: want a new process that reports the running container as hooked, got %v and sync %v", conn, last)
				}
			}

			after := h.runGss(t, pod, "after", true)
			h.wantProtected(t, after)
		})
	}
}

// TestNRIPreinstalledStateFile: containerd starts the pre-installed plugin
// with the example drop-in, whose stateFile makes it report to
// leakguardctl serve: connected, with its pid, while containerd runs;
// disconnected once containerd stops (the plugin exits with its
// connection).
func TestNRIPreinstalledStateFile(t *testing.T) {
	h, _ := setUp(t, "pre-installed")
	s, err := nristate.Read(h.stateFile)
	if err != nil || !s.ConnectedAt(time.Now()) || s.PID <= 0 {
		t.Fatalf("state with containerd running: %+v, %v; want connected", s, err)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", s.PID)); err != nil || !strings.Contains(string(b), "10-leakguard-nri") {
		t.Fatalf("pid %d is not the pre-installed plugin: %q, %v", s.PID, b, err)
	}
	h.ctd.Stop(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err = nristate.Read(h.stateFile)
		if err == nil && !s.Connected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state after containerd stopped: %+v, %v; want disconnected", s, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNRIPluginStopped: with the external plugin stopped, containers still
// start (unprotected: nothing adds the hook); started again, the plugin
// reports each container that started while it was away, and protects the
// next one.
func TestNRIPluginStopped(t *testing.T) {
	h, e := setUp(t, "external")
	pod := h.ctd.Crictl.RunPod(t, rt.PodSpec{Privileged: true})
	e.stop(t)

	away := h.runGss(t, pod, "while-away", true)
	h.wantUntouched(t, away)
	if runs := h.hookRuns(t, away); len(runs) != 0 {
		t.Fatalf("no hook without the plugin, got %v", runs)
	}

	h.startExternal(t)
	h.waitJoined(t, 2)
	missed := h.pluginLines(t, "not protected by leakguard-hook")
	if len(missed) != 1 || missed[0]["container"] != away || missed[0]["level"] != "WARN" {
		t.Fatalf("want the container started while away reported once, as a warning, got %v", missed)
	}
	syncs := h.pluginLines(t, "synchronized with the runtime")
	if last := syncs[len(syncs)-1]; last["missed"] != 1.0 || last["missed_unhooked"] != 1.0 {
		t.Fatalf("sync after restart: %v; want 1 missed, unhooked", last)
	}

	back := h.runGss(t, pod, "back", true)
	h.wantProtected(t, back)
}

// TestNRIConfigExamples: containerd 2.4 itself reads the example configs
// (conf/containerd/nri-*.toml) with their paths moved to private ones and
// resolves each documented key: a misspelt key would leave its default.
func TestNRIConfigExamples(t *testing.T) {
	root, err := cnitest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	private := strings.NewReplacer(
		"'/opt/nri/plugins'", "'"+dir+"/plugins'",
		"'/etc/nri/conf.d'", "'"+dir+"/conf.d'",
		"'/var/run/nri/nri.sock'", "'"+dir+"/nri.sock'",
		"'5s'", "'7s'", "'2s'", "'3s'")
	for name, want := range map[string][]string{
		"nri-preinstalled.toml": {"disable = false", "plugin_path = '" + dir + "/plugins'", "plugin_config_path = '" + dir + "/conf.d'",
			"socket_path = '" + dir + "/nri.sock'", "plugin_registration_timeout = '7s'", "plugin_request_timeout = '3s'"},
		"nri-external.toml": {"disable = false", "disable_connections = false", "socket_path = '" + dir + "/nri.sock'",
			"plugin_registration_timeout = '7s'", "plugin_request_timeout = '3s'"},
	} {
		b, err := os.ReadFile(filepath.Join(root, "conf", "containerd", name))
		if err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, name)
		if err := os.WriteFile(conf, []byte(private.Replace(string(b))), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(tools.Containerd, "--config", conf, "config", "dump").CombinedOutput()
		if err != nil {
			t.Fatalf("containerd config dump %s: %v\n%s", name, err, out)
		}
		_, nriSection, ok := strings.Cut(string(out), "[plugins.'io.containerd.nri.v1.nri']\n")
		if !ok {
			t.Fatalf("%s: no NRI section in containerd's view:\n%s", name, out)
		}
		nriSection, _, _ = strings.Cut(nriSection, "\n\n")
		for _, w := range want {
			if !strings.Contains(nriSection, w) {
				t.Errorf("%s: containerd reads the NRI section as\n%s\nwant %q", name, nriSection, w)
			}
		}
	}
}
