package install_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/install"
)

// hugeBridge is a valid 2 MiB conflist: over the installer's read cap, but
// runtimes read config files whole, so they load it.
func hugeBridge(name string) string {
	return `{"cniVersion":"1.0.0","name":"` + name + `","plugins":[{"type":"bridge","pad":"` + strings.Repeat("x", 2<<20) + `"}]}`
}

// A config over the read cap that sorts first is what runtimes load: the
// installer must not put leakguard into the next file and call the node
// covered (containerd would run the huge file's chain, without leakguard).
func TestHugeFirstConfigNotReportedInstalled(t *testing.T) {
	n := newNode(t)
	n.write("02-huge.conflist", hugeBridge("huge"))
	n.write("10-a.conflist", bridgeList)
	in := n.installer(n.opts())
	err := in.Reconcile()
	file, chain := n.runtimeChain()
	st := in.Status()
	if st.Installed && !strings.HasSuffix(chain, ",leakguard") {
		t.Fatalf("Status says installed (%+v) but runtimes load %s: %s", st, file, chain)
	}
	if err == nil || !strings.Contains(err.Error(), "02-huge.conflist") {
		t.Fatalf("Reconcile = %v, want an error naming 02-huge.conflist", err)
	}
	if n.read("10-a.conflist") != bridgeList {
		t.Fatal("10-a.conflist edited: runtimes do not load it")
	}
	got, ok, err := install.Check(n.conf, n.bin, "")
	if ok {
		t.Fatalf("Check = %s, %v, %v: runtimes load 02-huge.conflist without leakguard", got, ok, err)
	}
}

// Uninstall must not remove the binary while a config runtimes load still
// names leakguard, even one over the read cap.
func TestUninstallKeepsBinaryForHugeConfigNamingLeakguard(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	in := n.installer(n.opts())
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	big := `{"cniVersion":"1.0.0","name":"huge","plugins":[{"type":"bridge","pad":"` + strings.Repeat("x", 2<<20) + `"},{"type":"leakguard"}]}`
	n.write("05-huge.conflist", big)
	_, err := in.Uninstall("")
	if _, serr := os.Stat(filepath.Join(n.bin, install.PluginType)); serr != nil {
		t.Fatalf("binary removed (Uninstall = %v) while 05-huge.conflist, which runtimes load, runs leakguard", err)
	}
	if err == nil || !strings.Contains(err.Error(), "05-huge.conflist") {
		t.Fatalf("Uninstall = %v, want an error naming 05-huge.conflist", err)
	}
}

// The hook dir receives a binary every container start runs as root: one
// that others can write to (planted 0777, or owned by another user) is
// refused, as the conf and bin dirs are, and nothing is installed there.
func TestHookDirOthersCanWriteRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(dir string) error
	}{
		{"world-writable", func(dir string) error { return os.Chmod(dir, 0o777) }},
		{"owned by another user", func(dir string) error { return os.Chown(dir, 4242, 4242) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			n.write("10-a.conflist", bridgeList)
			hookDir := filepath.Join(n.root, "hooks")
			if err := os.Mkdir(hookDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := tc.setup(hookDir); err != nil {
				t.Fatal(err)
			}
			opts := n.opts()
			opts.HookDir = hookDir
			err := n.installer(opts).Reconcile()
			if err == nil {
				t.Fatal("Reconcile succeeded with a hook dir others can write to")
			}
			if _, serr := os.Lstat(filepath.Join(hookDir, install.HookBinary)); serr == nil {
				t.Fatalf("hook installed into %s (Reconcile = %v)", hookDir, err)
			}
		})
	}
}

// Converting 10-ptp.conf writes 10-ptp.conflist: when a file of that name
// is already there and is not leakguard's earlier conversion nor the same
// network (another network's config, or one that does not parse), it is
// someone else's and must not be overwritten, nor the .conf removed.
func TestConversionNeverClobbersAnotherConflist(t *testing.T) {
	for name, other := range map[string]string{
		"another network": bridgeList,
		"unparsable":      `{"cniVersion":"1.0.0","name":"half-writ`,
	} {
		t.Run(name, func(t *testing.T) {
			n := newNode(t)
			n.write("10-ptp.conf", ptpConf)
			n.write("10-ptp.conflist", other)
			err := n.installer(n.opts()).Reconcile()
			if got := n.read("10-ptp.conflist"); got != other {
				t.Fatalf("10-ptp.conflist overwritten (Reconcile = %v):\n%s", err, got)
			}
			if !n.exists("10-ptp.conf") {
				t.Fatal("10-ptp.conf removed")
			}
			if err == nil || !strings.Contains(err.Error(), "10-ptp.conflist") {
				t.Fatalf("Reconcile = %v, want an error naming 10-ptp.conflist", err)
			}
		})
	}
}

// The same network in both forms (its agent writes the .conf and the
// .conflist): the .conf, sorting first, is what runtimes use, and it is
// converted over the .conflist.
func TestConversionOverTheSameNetworksConflist(t *testing.T) {
	n := newNode(t)
	n.write("10-ptp.conf", ptpConf)
	n.write("10-ptp.conflist", strings.Replace(bridgeList, `"podnet"`, `"ptpnet"`, 1))
	if err := n.installer(n.opts()).Reconcile(); err != nil {
		t.Fatal(err)
	}
	if n.exists("10-ptp.conf") {
		t.Fatal("10-ptp.conf still there")
	}
	if file, chain := n.runtimeChain(); file != "10-ptp.conflist" || chain != "ptp,leakguard" {
		t.Fatalf("runtime loads %s: %s", file, chain)
	}
}

// In own-file mode the own file is a copy of the primary: when the
// primary's agent removes its config (the CNI is being uninstalled or
// swapped, the node is to go NotReady), the copy must not live on and keep
// runtimes setting pods up on a network that is gone.
func TestOwnFileGoesWithThePrimary(t *testing.T) {
	n := newNode(t)
	n.write("10-aws.conflist", bridgeList)
	opts := n.opts()
	opts.OwnFile = install.DefaultOwnFile
	in := n.installer(opts)
	watch(t, in)
	waitFor(t, "own file", 5*time.Second, func() bool { return in.Status().Installed })
	if err := os.Remove(filepath.Join(n.conf, "10-aws.conflist")); err != nil {
		t.Fatal(err)
	}
	// The pass removes the file, then sets the status.
	waitFor(t, "own file removed with the primary, not installed", 2*time.Second, func() bool {
		return !n.exists(install.DefaultOwnFile) && !in.Status().Installed
	})
	// The primary comes back: so does the own file.
	n.write("10-aws.conflist", bridgeList)
	waitFor(t, "own file back", 2*time.Second, func() bool { return in.Status().Installed && n.exists(install.DefaultOwnFile) })
}

// A primary whose file name is near NAME_MAX (255) still gets the entry:
// the temp file beside it must not need a longer name.
func TestLongPrimaryFileName(t *testing.T) {
	n := newNode(t)
	name := "10-" + strings.Repeat("a", 240) + ".conflist"
	n.write(name, bridgeList)
	if err := n.installer(n.opts()).Reconcile(); err != nil {
		t.Fatalf("Reconcile = %v", err)
	}
	if file, chain := n.runtimeChain(); file != name || chain != "bridge,portmap,leakguard" {
		t.Fatalf("runtime loads %s: %s", file, chain)
	}
}

// A state dir the plugin will refuse (someone else's files in a 0755 dir,
// so not adopted) fails every pod's ADD once the entry is in: the entry is
// not inserted, and the pass says why.
func TestEntryNotInsertedWhenThePluginWouldRefuseTheStateDir(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	state := filepath.Join(n.root, "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "planted"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	opts := n.opts()
	e, err := install.ParseEntry(`{"stateDir":"` + state + `"}`)
	if err != nil {
		t.Fatal(err)
	}
	opts.Entry = e
	in := n.installer(opts)
	err = in.Reconcile()
	if n.read("10-a.conflist") != bridgeList {
		t.Fatalf("entry inserted (Reconcile = %v) although the plugin refuses the state dir", err)
	}
	if err == nil || !strings.Contains(err.Error(), state) {
		t.Fatalf("Reconcile = %v, want an error naming %s", err, state)
	}
	if in.Status().Installed {
		t.Fatal("installed")
	}
}

// A binary overwritten in place right after the installer put it there
// (the moment it appears) is repaired: the installer must not take what it
// finds after its rename for its own copy.
func TestBinaryOverwrittenRightAfterInstallIsRepaired(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	opts := n.opts()
	opts.Resync = 20 * time.Millisecond
	in := n.installer(opts)
	watch(t, in)
	waitFor(t, "first insertion", 5*time.Second, func() bool { return in.Status().Installed })
	bin := filepath.Join(n.bin, install.PluginType)
	want := "#!/bin/sh\n# leakguard v1\n"
	for round := 0; round < 30; round++ {
		if err := os.Remove(bin); err != nil {
			t.Fatal(err)
		}
		// Spin until it is back, then overwrite it at once.
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := os.Stat(bin); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: binary not restored", round)
			}
		}
		if err := os.WriteFile(bin, []byte("truncated"), 0o755); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "binary repaired", 2*time.Second, func() bool {
			b, _ := os.ReadFile(bin)
			return string(b) == want
		})
	}
}
