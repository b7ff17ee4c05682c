package install_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/leakguard/leakguard/pkg/install"
)

// The hook policy (a ConfigMap's file, say, behind its symlinks) lands
// beside the hook, 0644, and follows its source; one the hook would refuse
// is not installed and fails the pass; uninstall removes it after the hook.
func TestHookPolicy(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	n.writeFrom(install.HookBinary, "#!/bin/sh\n")
	cm := filepath.Join(n.root, "configmap")
	data := filepath.Join(cm, "..2026_data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(data, "hook.json"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"mode":"all"}`)
	if err := os.Symlink("..2026_data/hook.json", filepath.Join(cm, "hook.json")); err != nil {
		t.Fatal(err)
	}
	hookDir := filepath.Join(n.root, "libexec", "leakguard")
	opts := n.opts()
	opts.HookDir, opts.HookPolicy = hookDir, filepath.Join(cm, "hook.json")
	in := n.installer(opts)
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(hookDir, install.HookPolicyFile)
	check := func(want string) {
		t.Helper()
		fi, err := os.Lstat(dst)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
			t.Fatalf("policy: %v, %v (want a 0644 regular file)", fi, err)
		}
		if b, _ := os.ReadFile(dst); string(b) != want {
			t.Fatalf("policy holds %q, want %q", b, want)
		}
	}
	check(`{"mode":"all"}`)

	write(`{"mode":"off"}`)
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	check(`{"mode":"off"}`)

	write(`{"mode":"loud"}`)
	if err := in.Reconcile(); err == nil || !strings.Contains(err.Error(), "loud") {
		t.Fatalf("invalid policy: %v, want the hook's reason", err)
	}
	check(`{"mode":"off"}`)

	write(`{"mode":"privileged"}`)
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	rep, err := in.Uninstall("")
	if err != nil {
		t.Fatal(err)
	}
	hook := filepath.Join(hookDir, install.HookBinary)
	if i, j := slices.Index(rep.Binaries, hook), slices.Index(rep.Binaries, dst); i < 0 || j < i {
		t.Errorf("uninstall removed %v: want the hook, then its policy", rep.Binaries)
	}
	if _, err := os.Lstat(dst); !os.IsNotExist(err) {
		t.Errorf("policy left after uninstall: %v", err)
	}
}

func TestHookPolicyNeedsHookDir(t *testing.T) {
	n := newNode(t)
	opts := n.opts()
	opts.HookPolicy = filepath.Join(n.root, "hook.json")
	if _, err := install.New(opts); err == nil {
		t.Fatal("a hook policy without a hook dir accepted")
	}
}

// A state dir as a hostPath volume leaves it (empty, 0755) is made 0700
// before the entry goes in: the plugin would refuse it at every ADD.
func TestStateDirAdopted(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	state := filepath.Join(n.root, "run-leakguard")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(state, 0o755); err != nil {
		t.Fatal(err)
	}
	entry, err := install.ParseEntry(`{"stateDir":"` + state + `"}`)
	if err != nil {
		t.Fatal(err)
	}
	opts := n.opts()
	opts.Entry = entry
	if err := n.installer(opts).Reconcile(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir %v, %v; want 0700", fi, err)
	}
}
