package hook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// busyboxRootfs makes a minimal image: static busybox, and a gssproxy config
// with kernel_nfsd on.
func busyboxRootfs(t *testing.T, b *bundle) {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("static busybox missing (apt-get install busybox-static): %v", err)
	}
	if err := os.MkdirAll(filepath.Join(b.rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.rootfs, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sh", "cat"} {
		if err := os.Symlink("busybox", filepath.Join(b.rootfs, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp"} {
		os.MkdirAll(filepath.Join(b.rootfs, d), 0o755)
	}
	b.write(t, "etc/gssproxy/gssproxy.conf", []byte(nfsOn))
}

// containerName is unique per test run; runtimes refuse duplicates.
func containerName(kind string) string {
	return fmt.Sprintf("lg-hook-%s-%d-%d", kind, os.Getpid(), time.Now().UnixNano()%1e6)
}

// runcSpec is `runc spec` with the container printing its gssproxy config.
func runcSpec(t *testing.T, b *bundle, privileged bool) *specs.Spec {
	t.Helper()
	if out, err := exec.Command("runc", "spec", "--bundle", b.dir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(b.dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	spec.Process.Terminal = false
	spec.Process.Args = []string{"/bin/cat", "/etc/gssproxy/gssproxy.conf"}
	if privileged { // what --privileged means to runtimes
		c := spec.Process.Capabilities
		for _, set := range []*[]string{&c.Bounding, &c.Effective, &c.Permitted} {
			*set = append(*set, "CAP_SYS_ADMIN")
		}
		spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths = nil, nil
	}
	return &spec
}

// runRunc runs the bundle to completion and returns the container's stdout.
func runRunc(t *testing.T, b *bundle) string {
	t.Helper()
	state := t.TempDir()
	id := containerName("runc")
	t.Cleanup(func() { exec.Command("runc", "--root", state, "delete", "--force", id).Run() })
	cmd := exec.Command("runc", "--root", state, "run", "--bundle", b.dir, id)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc run: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestRunc: runc runs the hook from config.json; a privileged container sees
// kernel_nfsd off, an unprivileged one sees the image's config unchanged.
func TestRunc(t *testing.T) {
	need(t, "runc")
	tests := []struct {
		name       string
		privileged bool
		stage      string
		decision   string
	}{
		{"privileged, createRuntime", true, "createRuntime", "edited"},
		{"privileged, legacy prestart", true, "prestart", "edited"},
		{"unprivileged", false, "createRuntime", "skipped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBundle(t)
			busyboxRootfs(t, b)
			spec := runcSpec(t, b, tt.privileged)
			logFile := filepath.Join(t.TempDir(), "hook.log")
			h := exampleHooks(t, "../../conf/runc/config-hooks.json")
			h[0].Path = hookBin
			h[0].Args = append(h[0].Args, "--config", writePolicy(t, `{"logFile":"`+logFile+`"}`))
			spec.Hooks = &specs.Hooks{}
			if tt.stage == "prestart" {
				spec.Hooks.Prestart = h //nolint:staticcheck // deprecated by the spec, still used: this case tests the legacy stage
			} else {
				spec.Hooks.CreateRuntime = h
			}
			b.writeSpec(t, spec)

			seen := runRunc(t, b)
			logged, _ := os.ReadFile(logFile)
			t.Logf("container saw:\n%shook logged: %s", seen, logged)
			m := logLine(t, string(logged))
			if m["decision"] != tt.decision || m["privileged"] != tt.privileged {
				t.Fatalf("hook log %s", logged)
			}
			if on := strings.Contains(seen, "kernel_nfsd = yes"); on == tt.privileged {
				t.Fatalf("privileged=%v container saw kernel_nfsd on=%v:\n%s", tt.privileged, on, seen)
			}
			if tt.privileged && !strings.Contains(seen, "kernel_nfsd = no") {
				t.Fatalf("container saw:\n%s", seen)
			}
		})
	}
}

// TestRuncSymlinkIntoBindMount: the image links /etc/gssproxy -> /srv/gss and
// config.json bind-mounts a host directory at /srv/gss. runc mounts it in the
// container's mount namespace, which the hook (in the host's) never sees: it
// sees the image's own /srv/gss under the mount point. The container reads
// the host's file, so the hook must report a risk and edit neither the
// image's copy nor the host's file.
func TestRuncSymlinkIntoBindMount(t *testing.T) {
	need(t, "runc")
	b := newBundle(t)
	busyboxRootfs(t, b)
	imageCopy := "# image copy\n" + nfsOn
	hostCopy := "# host copy\n" + nfsOn
	if err := os.RemoveAll(filepath.Join(b.rootfs, "etc/gssproxy")); err != nil {
		t.Fatal(err)
	}
	b.write(t, "srv/gss/gssproxy.conf", []byte(imageCopy))
	if err := os.Symlink("/srv/gss", filepath.Join(b.rootfs, "etc/gssproxy")); err != nil {
		t.Fatal(err)
	}
	hostDir := t.TempDir()
	hostFile := filepath.Join(hostDir, "gssproxy.conf")
	if err := os.WriteFile(hostFile, []byte(hostCopy), 0o644); err != nil {
		t.Fatal(err)
	}
	var before unix.Stat_t
	if err := unix.Stat(hostFile, &before); err != nil {
		t.Fatal(err)
	}

	spec := runcSpec(t, b, true)
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/srv/gss", Type: "bind", Source: hostDir, Options: []string{"rbind"}})
	logFile := filepath.Join(t.TempDir(), "hook.log")
	h := exampleHooks(t, "../../conf/runc/config-hooks.json")
	h[0].Path = hookBin
	h[0].Args = append(h[0].Args, "--config", writePolicy(t, `{"logFile":"`+logFile+`"}`))
	spec.Hooks = &specs.Hooks{CreateRuntime: h}
	b.writeSpec(t, spec)

	seen := runRunc(t, b)
	logged, _ := os.ReadFile(logFile)
	t.Logf("container saw:\n%shook logged: %s", seen, logged)
	if seen != hostCopy {
		t.Fatalf("the container should read the host's file through the link, saw:\n%s", seen)
	}
	m := logLine(t, string(logged))
	risks := fmt.Sprint(m["risks"])
	if m["decision"] != "risk" || m["level"] != "WARN" || len(m["files_changed"].([]any)) != 0 ||
		!strings.Contains(risks, "/srv/gss is bind-mounted") {
		t.Fatalf("hook log %s", logged)
	}
	if got := b.read(t, "srv/gss/gssproxy.conf"); got != imageCopy {
		t.Fatalf("image copy under the mount point changed:\n%s", got)
	}
	got, err := os.ReadFile(hostFile)
	if err != nil || string(got) != hostCopy {
		t.Fatalf("host file changed: %q %v", got, err)
	}
	var after unix.Stat_t
	if err := unix.Stat(hostFile, &after); err != nil {
		t.Fatal(err)
	}
	if after.Ino != before.Ino || after.Mtim != before.Mtim || after.Ctim != before.Ctim {
		t.Fatalf("host file touched: before %+v after %+v", before, after)
	}
}
