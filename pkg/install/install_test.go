package install_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/leakguard/leakguard/pkg/install"
)

// The primary is picked as runtimes pick it: the first file in name order
// (.conf, .conflist, .json) that loads; a file that does not load, one with
// another extension and a leakguard-only chain are skipped. Only that file
// is edited.
func TestPicksThePrimaryInRuntimeOrder(t *testing.T) {
	n := newNode(t)
	n.write("00-broken.conflist", `{"cniVersion": "1.0.0", "name": "x", "plugins": [`)
	n.write("01-notype.conf", `{"cniVersion": "1.0.0", "name": "x"}`)
	n.write("06-only-leakguard.conflist", `{"cniVersion": "1.0.0", "name": "lg", "plugins": [{"type": "leakguard"}]}`)
	n.write("03-ignored.yaml", `{"cniVersion": "1.0.0", "name": "x", "type": "bridge"}`)
	n.write("10-first.conflist", bridgeList)
	n.write("20-second.conflist", strings.Replace(bridgeList, "podnet", "other", 1))
	n.write("05-aaa.json", strings.Replace(ptpConf, "ptpnet", "jsonnet", 1))
	before := map[string]string{}
	for _, f := range []string{"00-broken.conflist", "01-notype.conf", "06-only-leakguard.conflist", "03-ignored.yaml", "20-second.conflist"} {
		before[f] = n.read(f)
	}

	in := n.installer(n.opts())
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	// CRI-O and the kubelet skip what does not load; containerd fails the
	// whole dir while 00-broken sorts first: the operator must hear of it.
	for _, f := range []string{"00-broken.conflist", "01-notype.conf"} {
		found := false
		for _, r := range n.log.records("config file skipped") {
			found = found || r["file"] == f
		}
		if !found {
			t.Errorf("%s skipped silently:\n%s", f, n.log)
		}
	}
	// 05-aaa.json is the first loadable one: it becomes 05-aaa.conflist.
	if n.exists("05-aaa.json") || !n.exists("05-aaa.conflist") {
		t.Fatalf("05-aaa.json should have become 05-aaa.conflist")
	}
	if got := n.chain("05-aaa.conflist"); !reflect.DeepEqual(got, []string{"ptp", "leakguard"}) {
		t.Fatalf("05-aaa.conflist chain = %v", got)
	}
	if n.read("10-first.conflist") != bridgeList {
		t.Errorf("10-first.conflist edited although 05-aaa sorts first")
	}
	for f, want := range before {
		if n.read(f) != want {
			t.Errorf("%s edited", f)
		}
	}
	if st := in.Status(); st.Primary != "05-aaa.json" || st.File != "05-aaa.conflist" {
		t.Errorf("status = %+v", st)
	}
}

// Two primaries: the first in runtime order gets the entry, and the runtime
// (containerd's loader) runs leakguard.
func TestTwoPrimariesFirstInRuntimeOrder(t *testing.T) {
	n := newNode(t)
	n.write("20-b.conflist", strings.Replace(bridgeList, "podnet", "b", 1))
	n.write("10-a.conflist", bridgeList)
	in := n.installer(n.opts())
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if file, chain := n.runtimeChain(); file != "10-a.conflist" || chain != "bridge,portmap,leakguard" {
		t.Fatalf("runtime loads %s: %s", file, chain)
	}
	if got := n.chain("20-b.conflist"); !reflect.DeepEqual(got, []string{"bridge", "portmap"}) {
		t.Fatalf("20-b chain = %v", got)
	}
	if st := in.Status(); !st.Installed || st.File != "10-a.conflist" || st.Err != "" {
		t.Fatalf("status = %+v", st)
	}
}

// --primary names the file to edit, whatever sorts first.
func TestPrimaryOverride(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	n.write("20-b.conflist", strings.Replace(bridgeList, "podnet", "b", 1))
	opts := n.opts()
	opts.Primary = "20-b.conflist"
	in := n.installer(opts)
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := n.chain("20-b.conflist"); !reflect.DeepEqual(got, []string{"bridge", "portmap", "leakguard"}) {
		t.Fatalf("20-b chain = %v", got)
	}
	if n.read("10-a.conflist") != bridgeList {
		t.Fatal("10-a edited")
	}
}

// The entry goes last; name, cniVersion, key order, every unknown field
// and every number (a large integer too) are kept as written.
func TestInsertKeepsEverythingElse(t *testing.T) {
	n := newNode(t)
	primary := `{
  "cniVersion": "1.1.0",
  "name": "aws-cni",
  "disableCheck": true,
  "plugins": [
    {"name": "aws-cni", "type": "aws-cni", "vethPrefix": "eni", "mtu": "9001", "pluginLogLevel": "DEBUG", "bigNumber": 12345678901234567890, "float": 1.50},
    {"type": "egress-cni", "enabled": "false", "nodeIP": ""},
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ],
  "zzUnknown": {"b": 1, "a": [1, 2, 3]},
  "aaUnknown": "kept"
}
`
	n.write("10-aws.conflist", primary)
	opts := n.opts()
	var err error
	if opts.Entry, err = install.ParseEntry(`{"logLevel": "debug", "stateDir": "/run/leakguard", "pinNetns": true}`); err != nil {
		t.Fatal(err)
	}
	if err := n.installer(opts).Reconcile(); err != nil {
		t.Fatal(err)
	}
	got := n.read("10-aws.conflist")
	// Key order of the top level, as written.
	var order []string
	for _, k := range []string{`"cniVersion"`, `"name": "aws-cni",`, `"disableCheck"`, `"plugins"`, `"zzUnknown"`, `"aaUnknown"`} {
		order = append(order, k)
		if !strings.Contains(got, k) {
			t.Fatalf("%s missing:\n%s", k, got)
		}
	}
	for i := 1; i < len(order); i++ {
		if strings.Index(got, order[i-1]) > strings.Index(got, order[i]) {
			t.Errorf("%s moved after %s:\n%s", order[i-1], order[i], got)
		}
	}
	for _, lit := range []string{"12345678901234567890", "1.50", `"9001"`, `"nodeIP": ""`} {
		if !strings.Contains(got, lit) {
			t.Errorf("%s not kept verbatim:\n%s", lit, got)
		}
	}
	// Semantically: the old config with one more plugin.
	var was, now map[string]any
	_ = json.Unmarshal([]byte(primary), &was)
	if err := json.Unmarshal([]byte(got), &now); err != nil {
		t.Fatal(err)
	}
	ps := now["plugins"].([]any)
	last := ps[len(ps)-1]
	now["plugins"] = ps[:len(ps)-1]
	if !reflect.DeepEqual(was, now) {
		t.Errorf("config changed beyond the entry:\nwas %v\nnow %v", was, now)
	}
	want := map[string]any{"type": "leakguard", "logLevel": "debug", "stateDir": "/run/leakguard", "pinNetns": true}
	if !reflect.DeepEqual(last, want) {
		t.Errorf("entry = %v, want %v", last, want)
	}
	if !strings.Contains(got, `"type": "leakguard",`+"\n"+`      "logLevel"`) {
		t.Errorf("entry keys not in the order given:\n%s", got)
	}
	list, err := libcni.ConfListFromFile(filepath.Join(n.conf, "10-aws.conflist"))
	if err != nil || list.Name != "aws-cni" || list.CNIVersion != "1.1.0" || !list.DisableCheck {
		t.Fatalf("libcni reads %+v, %v", list, err)
	}
}

// Running again, and again after a restart (a new installer, as after a
// reboot or pod restart), changes nothing: one entry, no rewrite. An old
// entry is replaced, duplicates (an older installer's) collapse into one at
// the end.
func TestIdempotentOverRunsAndRestarts(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	path := filepath.Join(n.conf, "10-a.conflist")
	if err := n.installer(n.opts()).Reconcile(); err != nil {
		t.Fatal(err)
	}
	first, firstIno := n.read("10-a.conflist"), ino(t, path)
	for i := 0; i < 5; i++ {
		in := n.installer(n.opts())
		for j := 0; j < 3; j++ {
			if err := in.Reconcile(); err != nil {
				t.Fatal(err)
			}
		}
		if st := in.Status(); st.Writes != 0 || !st.Installed {
			t.Fatalf("restart %d: %+v", i, st)
		}
	}
	if n.read("10-a.conflist") != first || ino(t, path) != firstIno {
		t.Fatal("file rewritten although it already held the entry")
	}
	if got := n.chain("10-a.conflist"); !reflect.DeepEqual(got, []string{"bridge", "portmap", "leakguard"}) {
		t.Fatalf("chain = %v", got)
	}

	// New settings replace the entry in place of duplicating it.
	opts := n.opts()
	opts.Entry, _ = install.ParseEntry(`{"logLevel": "warn"}`)
	if err := n.installer(opts).Reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := n.chain("10-a.conflist"); !reflect.DeepEqual(got, []string{"bridge", "portmap", "leakguard"}) || !strings.Contains(n.read("10-a.conflist"), `"warn"`) {
		t.Fatalf("chain = %v\n%s", got, n.read("10-a.conflist"))
	}

	// Entries in the middle and twice (another installer's mistakes).
	n.write("10-a.conflist", `{"cniVersion": "1.0.0", "name": "podnet", "plugins": [
		{"type": "leakguard"}, {"type": "bridge"}, {"type": "leakguard", "logLevel": "error"}, {"type": "tuning"}]}`)
	if err := n.installer(n.opts()).Reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := n.chain("10-a.conflist"); !reflect.DeepEqual(got, []string{"bridge", "tuning", "leakguard"}) {
		t.Fatalf("chain = %v", got)
	}
}

// A .conf (and a .json) primary becomes a .conflist of the same stem with
// the same name and cniVersion and the whole config as its first plugin;
// the .conf is gone in the same pass; mode and owner are kept.
func TestConfBecomesConflist(t *testing.T) {
	for _, ext := range []string{".conf", ".json"} {
		t.Run(ext, func(t *testing.T) {
			n := newNode(t)
			n.write("10-ptp"+ext, ptpConf)
			if err := os.Chmod(filepath.Join(n.conf, "10-ptp"+ext), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(filepath.Join(n.conf, "10-ptp"+ext), 1234, 5678); err != nil {
				t.Fatal(err)
			}
			if err := n.installer(n.opts()).Reconcile(); err != nil {
				t.Fatal(err)
			}
			if n.exists("10-ptp" + ext) {
				t.Fatalf("10-ptp%s still there", ext)
			}
			list, err := libcni.ConfListFromFile(filepath.Join(n.conf, "10-ptp.conflist"))
			if err != nil {
				t.Fatal(err)
			}
			if list.Name != "ptpnet" || list.CNIVersion != "0.4.0" || len(list.Plugins) != 2 ||
				list.Plugins[0].Network.Type != "ptp" || list.Plugins[1].Network.Type != "leakguard" {
				t.Fatalf("conflist = %s", list.Bytes)
			}
			var first map[string]any
			if err := json.Unmarshal(list.Plugins[0].Bytes, &first); err != nil {
				t.Fatal(err)
			}
			var orig map[string]any
			_ = json.Unmarshal([]byte(ptpConf), &orig)
			if !reflect.DeepEqual(first, orig) {
				t.Errorf("first plugin = %v, want the whole .conf %v", first, orig)
			}
			fi, err := os.Stat(filepath.Join(n.conf, "10-ptp.conflist"))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want 0600", fi.Mode().Perm())
			}
			var uid, gid int
			if s, ok := fi.Sys().(*syscall.Stat_t); ok {
				uid, gid = int(s.Uid), int(s.Gid)
			}
			if uid != 1234 || gid != 5678 {
				t.Errorf("owner %d:%d, want 1234:5678", uid, gid)
			}
			if file, chain := n.runtimeChain(); file != "10-ptp.conflist" || chain != "ptp,leakguard" {
				t.Fatalf("runtime loads %s: %s", file, chain)
			}
		})
	}
}

// The mode of an edited conflist is kept.
func TestEditKeepsMode(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	if err := os.Chmod(filepath.Join(n.conf, "10-a.conflist"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := n.installer(n.opts()).Reconcile(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(n.conf, "10-a.conflist"))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, %v; want 0640", fi.Mode().Perm(), err)
	}
}

// With no primary, nothing is written (never a standalone config); Install
// waits, and finishes as soon as a primary appears.
func TestWaitsForAPrimaryNeverStandalone(t *testing.T) {
	n := newNode(t)
	in := n.installer(n.opts())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := in.Install(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Install = %v, want to wait for a primary", err)
	}
	ents, _ := os.ReadDir(n.conf)
	if len(ents) != 0 {
		t.Fatalf("conf dir holds %v with no primary", ents)
	}
	if st := in.Status(); st.Installed || !strings.Contains(st.Err, "no primary") {
		t.Fatalf("status = %+v", st)
	}
	done := make(chan error, 1)
	go func() { done <- in.Install(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	n.rewriteByRename("10-a.conflist", bridgeList)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Install did not notice the primary")
	}
	if got := n.chain("10-a.conflist"); !reflect.DeepEqual(got, []string{"bridge", "portmap", "leakguard"}) {
		t.Fatalf("chain = %v", got)
	}
}

// A conf dir that does not exist yet is waited for, never created.
func TestWaitsForTheConfDir(t *testing.T) {
	n := newNode(t)
	if err := os.Remove(n.conf); err != nil {
		t.Fatal(err)
	}
	in := n.installer(n.opts())
	done := make(chan error, 1)
	go func() { done <- in.Install(context.Background()) }()
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Lstat(n.conf); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("conf dir created by the installer: %v", err)
	}
	if st := in.Status(); st.Installed || !strings.Contains(st.Err, "does not exist yet") {
		t.Fatalf("status = %+v", st)
	}
	// The binary is in place already: it never depends on the conf dir.
	if _, err := os.Stat(filepath.Join(n.bin, "leakguard")); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(n.root, "staging")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "10-a.conflist"), []byte(bridgeList), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, n.conf); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Install did not notice the conf dir")
	}
	if got := n.chain("10-a.conflist"); !reflect.DeepEqual(got, []string{"bridge", "portmap", "leakguard"}) {
		t.Fatalf("chain = %v", got)
	}
}

// A conf dir it cannot write (read-only) is a clear error, not installed,
// and retried: once it is writable the entry goes in without a restart.
func TestUnwritableConfDirRetried(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	readOnly(t, n.conf)
	in := n.installer(n.opts())
	watch(t, in)
	waitFor(t, "the write error in status", 5*time.Second, func() bool {
		return strings.Contains(in.Status().Err, "read-only file system")
	})
	if st := in.Status(); st.Installed {
		t.Fatalf("status = %+v", st)
	}
	if n.read("10-a.conflist") != bridgeList {
		t.Fatal("file changed on a read-only mount?")
	}
	// The pass sets the status, then logs: wait for the line.
	waitFor(t, "the error logged", 5*time.Second, func() bool { return len(n.log.records("not installed; retrying")) > 0 })
	makeWritable(t, n.conf)
	waitFor(t, "installed after the dir became writable", 10*time.Second, func() bool { return in.Status().Installed })
	if got := n.chain("10-a.conflist"); !reflect.DeepEqual(got, []string{"bridge", "portmap", "leakguard"}) {
		t.Fatalf("chain = %v", got)
	}
}

// Every temp file the installer writes is invisible to runtimes (no CNI
// extension) and gone after the write.
func TestNoTempFileLeftOrLoadable(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conf", ptpConf)
	stop := make(chan struct{})
	seen := make(chan string, 100)
	go func() {
		for {
			select {
			case <-stop:
				close(seen)
				return
			default:
			}
			files, _ := libcni.ConfFiles(n.conf, []string{".conf", ".conflist", ".json"})
			for _, f := range files {
				if strings.Contains(f, ".leakguard-") {
					seen <- f
				}
			}
		}
	}()
	opts := n.opts()
	opts.RevertBurst = 100 // each rewrite here is a revert
	in := n.installer(opts)
	for i := 0; i < 20; i++ {
		n.rewriteByRename("10-a.conf", strings.Replace(ptpConf, "1460", "15"+string(rune('0'+i%10))+"0", 1))
		if err := in.Reconcile(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	for f := range seen {
		t.Errorf("runtime listing saw the temp file %s", f)
	}
	ents, _ := os.ReadDir(n.conf)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".leakguard-") {
			t.Errorf("temp file left: %s", e.Name())
		}
	}
}

// A killed installer's temp files are removed once a minute old; a younger
// one (a second installer of a rolling update may be writing it) is kept,
// and so is anything not named like ours.
func TestStaleTempFilesRemoved(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	old := time.Now().Add(-2 * time.Minute)
	files := map[string]bool{ // name → removed
		".leakguard-10-a.conflist.tmp-123": true,
		".leakguard-10-a.conflist.tmp-456": false, // young
		".agent.tmp":                       false,
	}
	for name := range files {
		p := filepath.Join(n.conf, name)
		if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
		if name != ".leakguard-10-a.conflist.tmp-456" {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	binTemp := filepath.Join(n.bin, ".leakguard-leakguard.tmp-789")
	if err := os.WriteFile(binTemp, []byte("half a binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(binTemp, old, old); err != nil {
		t.Fatal(err)
	}
	if err := n.installer(n.opts()).Install(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, removed := range files {
		if n.exists(name) == removed {
			t.Errorf("%s: exists %v, want removed %v", name, n.exists(name), removed)
		}
	}
	if _, err := os.Stat(binTemp); !os.IsNotExist(err) {
		t.Errorf("stale temp in the bin dir kept: %v", err)
	}
}
