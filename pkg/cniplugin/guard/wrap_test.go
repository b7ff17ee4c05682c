package guard_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/test/nsutil"
)

var (
	recBuild sync.Once
	recDir   string
	recErr   error
)

// recDelegateDir returns a directory holding the recdelegate test plugin:
// the one `make test-bins` built, else a fresh build.
func recDelegateDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("LEAKGUARD_BIN_DIR"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "test", "recdelegate")); err == nil {
			return filepath.Join(d, "test")
		}
	}
	recBuild.Do(func() {
		recDir, recErr = os.MkdirTemp("", "recdelegate-")
		if recErr == nil {
			out, err := exec.Command("go", "build", "-o", recDir, "github.com/leakguard/leakguard/test/cmd/recdelegate").CombinedOutput()
			if err != nil {
				recErr = errors.New(string(out))
			}
		}
	})
	if recErr != nil {
		t.Fatalf("build recdelegate: %v", recErr)
	}
	return recDir
}

// call is one invocation recdelegate recorded.
type call struct {
	Verb  string          `json:"verb"`
	Netns string          `json:"netns"`
	Stdin json.RawMessage `json:"stdin"`
}

// wrapper turns f into a wrapper-mode fixture: leakguard wraps recdelegate,
// which "creates" f's interfaces by returning f's result. It returns the
// directory recdelegate records its calls in.
func (f *fixture) wrapper(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// testutils sets CNI_PATH to PATH for ADD, CHECK and DEL; GC and STATUS
	// run without it.
	t.Setenv("PATH", recDelegateDir(t)+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("CNI_PATH", os.Getenv("PATH"))
	res, err := json.Marshal(f.prevResult())
	if err != nil {
		t.Fatal(err)
	}
	if f.extra == nil {
		f.extra = map[string]any{}
	}
	f.extra["delegate"] = map[string]any{"type": "recdelegate", "recordDir": dir, "result": json.RawMessage(res)}
	return dir
}

func calls(t *testing.T, dir string) []call {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "calls.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []call
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func lastCall(t *testing.T, dir, verb string) call {
	t.Helper()
	cs := calls(t, dir)
	for i := len(cs) - 1; i >= 0; i-- {
		if cs[i].Verb == verb {
			return cs[i]
		}
	}
	t.Fatalf("delegate never got %s; calls: %+v", verb, cs)
	return call{}
}

func (f *fixture) wrapAdd(v string, extra map[string]any) ([]byte, error) {
	return f.tryAdd(f.args(f.podPath, f.conf(v, nil, extra)))
}

func (f *fixture) wrapDel(netns, v string) error {
	a := f.args(netns, f.conf(v, nil, nil))
	return f.node.Do(func(ns.NetNS) error {
		return testutils.CmdDelWithArgs(a, func() error { return f.plugin.Del(a) })
	})
}

// ADD runs the delegate's ADD with the wrapper's name, cniVersion,
// runtimeConfig and args, prints its result unchanged in the config's
// version, and records the attachment from it with the rendered delegate;
// every CNI version from 0.3.1 on.
func TestWrapperAddRecordsDelegateResult(t *testing.T) {
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			f := newFixture(t)
			dir := f.wrapper(t)
			extra := map[string]any{"runtimeConfig": map[string]any{"portMappings": []any{}}, "args": map[string]any{"cni": map[string]any{"x": "y"}}}
			out, err := f.wrapAdd(v, extra)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			var printed map[string]any
			if err := json.Unmarshal(out, &printed); err != nil || printed["cniVersion"] != v {
				t.Fatalf("printed %s, want a result in %s", out, v)
			}
			if ips, _ := printed["ips"].([]any); len(ips) != 1 {
				t.Errorf("printed result lost the delegate's IP: %s", out)
			}
			c := lastCall(t, dir, "ADD")
			var in map[string]any
			_ = json.Unmarshal(c.Stdin, &in)
			if c.Netns != f.podPath || in["name"] != netName || in["cniVersion"] != v || in["runtimeConfig"] == nil || in["args"] == nil || in["type"] != "recdelegate" {
				t.Errorf("delegate ADD got netns %q, stdin %s", c.Netns, c.Stdin)
			}
			r := f.loadRecord()
			if r == nil || len(r.HostLinks) != 1 || r.HostLinks[0].Index != f.hostVeth.Index || len(r.Delegate) == 0 {
				t.Fatalf("record %+v: want the host veth and the rendered delegate", r)
			}
		})
	}
}

// DEL hands the delegate the runtime's CNI_NETNS when the netns is alive,
// the pin when it is gone but pinned, and none otherwise; without a record,
// the path only if it holds a netns (never a leftover file).
func TestWrapperDelChoosesTheDelegatesNetns(t *testing.T) {
	t.Run("alive", func(t *testing.T) {
		f := newFixture(t)
		dir := f.wrapper(t)
		if _, err := f.wrapAdd("1.0.0", nil); err != nil {
			t.Fatal(err)
		}
		if err := f.wrapDel(f.podPath, "1.0.0"); err != nil {
			t.Fatal(err)
		}
		if c := lastCall(t, dir, "DEL"); c.Netns != f.podPath {
			t.Errorf("alive: delegate DEL netns %q, want %q", c.Netns, f.podPath)
		}
		if f.loadRecord() != nil {
			t.Error("record kept after a successful DEL")
		}
	})
	t.Run("gone, pinned", func(t *testing.T) {
		f := newFixture(t)
		f.pinFixture()
		dir := f.wrapper(t)
		if _, err := f.wrapAdd("1.1.0", nil); err != nil {
			t.Fatal(err)
		}
		pin := f.loadRecord().Pin
		nsutil.LeakBySocket(t, f.pod)
		if err := f.wrapDel(f.podPath, "1.1.0"); err != nil {
			t.Fatal(err)
		}
		if c := lastCall(t, dir, "DEL"); pin == nil || c.Netns != pin.Path {
			t.Errorf("pinned: delegate DEL netns %q, want the pin %+v", c.Netns, pin)
		}
		f.mustBeGone(f.hostVeth.Name)
		mustRemovedFile(t, pin.Path)
	})
	t.Run("gone, leftover file", func(t *testing.T) {
		f := newFixture(t)
		dir := f.wrapper(t)
		if _, err := f.wrapAdd("1.0.0", nil); err != nil {
			t.Fatal(err)
		}
		nsutil.LeakBySocket(t, f.pod)
		if err := os.WriteFile(f.podPath, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := f.wrapDel(f.podPath, "1.0.0"); err != nil {
			t.Fatal(err)
		}
		if c := lastCall(t, dir, "DEL"); c.Netns != "" {
			t.Errorf("leftover file: delegate DEL netns %q, want none", c.Netns)
		}
		f.mustBeGone(f.hostVeth.Name)
	})
	t.Run("no record", func(t *testing.T) {
		f := newFixture(t)
		dir := f.wrapper(t)
		if err := f.wrapDel(f.podPath, "1.0.0"); err != nil {
			t.Fatal(err)
		}
		if c := lastCall(t, dir, "DEL"); c.Netns != f.podPath {
			t.Errorf("no record, a netns: delegate DEL netns %q, want %q", c.Netns, f.podPath)
		}
		leftover := filepath.Join(t.TempDir(), "netns")
		if err := os.WriteFile(leftover, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := f.wrapDel(leftover, "1.0.0"); err != nil {
			t.Fatal(err)
		}
		if c := lastCall(t, dir, "DEL"); c.Netns != "" {
			t.Errorf("no record, a leftover file: delegate DEL netns %q, want none", c.Netns)
		}
	})
}

// A delegate whose DEL fails: DEL returns its error and keeps the record
// (leakguard still reaps the leaked host veth when it had no pin to offer);
// the retry runs the delegate again and cleans up.
func TestWrapperDelegateDelFailureKeepsRecordForRetry(t *testing.T) {
	f := newFixture(t)
	dir := f.wrapper(t)
	if _, err := f.wrapAdd("1.0.0", nil); err != nil {
		t.Fatal(err)
	}
	nsutil.LeakBySocket(t, f.pod)
	failFlag := filepath.Join(dir, "fail-DEL")
	if err := os.WriteFile(failFlag, []byte("ipam store busy"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := f.wrapDel(f.podPath, "1.0.0")
	var e *types.Error
	if !errors.As(err, &e) || e.Code != types.ErrTryAgainLater || !strings.Contains(e.Msg, "ipam store busy") {
		t.Fatalf("DEL = %v; want the delegate's error (code 11)", err)
	}
	if f.loadRecord() == nil {
		t.Fatal("record dropped although the main plugin's DEL failed")
	}
	f.mustBeGone(f.hostVeth.Name)
	if err := os.Remove(failFlag); err != nil {
		t.Fatal(err)
	}
	if err := f.wrapDel(f.podPath, "1.0.0"); err != nil {
		t.Fatalf("retry: %v", err)
	}
	dels := 0
	for _, c := range calls(t, dir) {
		if c.Verb == "DEL" {
			dels++
		}
	}
	if dels != 2 || f.loadRecord() != nil {
		t.Fatalf("retry: delegate DELs %d (want 2), record %+v (want none)", dels, f.loadRecord())
	}
}

// A config rewritten since ADD without the delegate (or with an unusable
// one) does not stop DEL: the recorded delegate runs.
func TestWrapperDelUsesRecordedDelegate(t *testing.T) {
	for name, del := range map[string]any{"removed": nil, "unusable": map[string]any{"type": "no-such-plugin"}} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			dir := f.wrapper(t)
			if _, err := f.wrapAdd("1.0.0", nil); err != nil {
				t.Fatal(err)
			}
			f.extra["delegate"] = del
			if del == nil {
				delete(f.extra, "delegate")
			}
			if err := f.wrapDel(f.podPath, "1.0.0"); err != nil {
				t.Fatal(err)
			}
			c := lastCall(t, dir, "DEL")
			var in map[string]any
			_ = json.Unmarshal(c.Stdin, &in)
			if in["type"] != "recdelegate" || in["recordDir"] != dir || in["name"] != netName {
				t.Errorf("recorded delegate not replayed: %s", c.Stdin)
			}
		})
	}
}

// CHECK, GC and STATUS are forwarded to the delegate (GC with the runtime's
// valid-attachments list), then leakguard's own run; errors of both are
// reported.
func TestWrapperForwardsCheckGCStatus(t *testing.T) {
	f := newFixture(t)
	dir := f.wrapper(t)
	if _, err := f.wrapAdd("1.1.0", nil); err != nil {
		t.Fatal(err)
	}
	prev, _ := json.Marshal(f.prevResult())
	a := f.args(f.podPath, f.conf("1.1.0", f.prevResult(), nil))
	err := f.node.Do(func(ns.NetNS) error {
		return testutils.CmdCheckWithArgs(a, func() error { return f.plugin.Check(a) })
	})
	if err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	c := lastCall(t, dir, "CHECK")
	var in map[string]json.RawMessage
	_ = json.Unmarshal(c.Stdin, &in)
	if c.Netns != f.podPath || in["prevResult"] == nil {
		t.Errorf("delegate CHECK got netns %q, stdin %s (prevResult %s)", c.Netns, c.Stdin, prev)
	}

	t.Setenv("CNI_PATH", os.Getenv("PATH")) // testutils unset it after CHECK
	list := []map[string]string{{"containerID": f.cid, "ifname": "eth0"}}
	if err := f.gc(map[string]any{"cni.dev/valid-attachments": list}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	c = lastCall(t, dir, "GC")
	_ = json.Unmarshal(c.Stdin, &in)
	if !strings.Contains(string(in["cni.dev/valid-attachments"]), f.cid) {
		t.Errorf("delegate GC got no valid-attachments list: %s", c.Stdin)
	}

	st := &skel.CmdArgs{StdinData: f.conf("1.1.0", nil, nil)}
	if err := f.node.Do(func(ns.NetNS) error { return f.plugin.Status(st) }); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	lastCall(t, dir, "STATUS")

	// The delegate failing CHECK and leakguard's own check failing (the
	// host veth is gone): both are reported.
	if err := os.WriteFile(filepath.Join(dir, "fail-CHECK"), []byte("bridge says no"), 0o600); err != nil {
		t.Fatal(err)
	}
	inNS(t, f.node, func() error { return delLink(f.hostVeth.Name) })
	err = f.node.Do(func(ns.NetNS) error {
		return testutils.CmdCheckWithArgs(a, func() error { return f.plugin.Check(a) })
	})
	if err == nil || !strings.Contains(err.Error(), "bridge says no") || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("CHECK with both failing = %v; want the delegate's and leakguard's errors", err)
	}
}

// A delegate that is not an object, has no type, is leakguard itself, sets
// another name or cniVersion, or is not in CNI_PATH fails ADD with code 7
// naming the reason; no record is written and nothing is run.
func TestWrapperRejectsBadDelegate(t *testing.T) {
	f := newFixture(t)
	dir := f.wrapper(t)
	for want, d := range map[string]any{
		"JSON object":      "bridge",
		`no plugin "type"`: map[string]any{"ipam": map[string]any{}},
		"leakguard itself": map[string]any{"type": "leakguard"},
		"name":             map[string]any{"type": "recdelegate", "name": "other"},
		"cniVersion":       map[string]any{"type": "recdelegate", "cniVersion": "0.4.0"},
		"not found":        map[string]any{"type": "no-such-plugin"},
	} {
		_, err := f.wrapAdd("1.0.0", map[string]any{"delegate": d})
		var e *types.Error
		if !errors.As(err, &e) || e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, "delegate") || !strings.Contains(e.Msg+e.Details, want) {
			t.Errorf("delegate %v: ADD = %v; want code 7 about %q", d, err, want)
		}
	}
	if f.loadRecord() != nil || len(calls(t, dir)) != 0 {
		t.Fatalf("refused ADDs left a record or ran the delegate: %+v", calls(t, dir))
	}
}

// If recording fails after the delegate's ADD succeeded, the delegate's DEL
// undoes it and ADD fails.
func TestWrapperAddUndoneWhenRecordingFails(t *testing.T) {
	f := newFixture(t)
	dir := f.wrapper(t)
	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.wrapAdd("1.0.0", map[string]any{"stateDir": filepath.Join(blocked, "state")}); err == nil {
		t.Fatal("ADD with an unusable state dir succeeded")
	}
	cs := calls(t, dir)
	if len(cs) != 2 || cs[0].Verb != "ADD" || cs[1].Verb != "DEL" || cs[1].Netns != f.podPath {
		t.Fatalf("delegate calls %+v; want ADD then DEL in the pod netns", cs)
	}
}

func delLink(name string) error {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkDel(l)
}

func gssFlag(t *testing.T, value string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "use-gss-proxy")
	if err := os.WriteFile(p, []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Chained: a DEL that finds the netns alive reads its gss-proxy flag; armed,
// the netns is doomed: logged, kept in the tombstone, and that tombstone
// outlives its links (the sweep and GC keep it for the boot). Not armed: no
// mark.
func TestDoomedNetnsRecordedInTombstone(t *testing.T) {
	for _, armed := range []bool{true, false} {
		f := newFixture(t)
		f.plugin.GSSFlagPath = gssFlag(t, map[bool]string{true: "1\n", false: "0\n"}[armed])
		f.add("1.1.0")
		if err := f.del(f.podPath, "1.1.0", f.prevResult()); err != nil {
			t.Fatal(err)
		}
		tombs := tombstones(t, f.stateDir)
		if len(tombs) != 1 {
			t.Fatalf("armed=%v: tombstones %v, want one", armed, tombs)
		}
		var tomb struct {
			GSSProxyArmed bool `json:"gssProxyArmed"`
		}
		b, _ := os.ReadFile(tombs[0])
		if err := json.Unmarshal(b, &tomb); err != nil || tomb.GSSProxyArmed != armed {
			t.Fatalf("armed=%v: tombstone %s", armed, b)
		}
		// The main plugin cleans the host side; GC then drops the tombstone
		// unless its netns is doomed.
		inNS(t, f.node, func() error { return delLink(f.hostVeth.Name) })
		if err := f.gc(nil); err != nil {
			t.Fatal(err)
		}
		if n := len(tombstones(t, f.stateDir)); (n == 1) != armed {
			t.Errorf("armed=%v: %d tombstones after GC", armed, n)
		}
	}
}

// Wrapped: after the delegate's DEL of a doomed netns, leakguard evacuates
// it: interfaces left in it are deleted (the pod veth, and its host end with
// it) and a kind-less device (here an ifb stand-in for an ENI) goes back to
// the host under its recorded name.
func TestWrapperEvacuatesDoomedNetns(t *testing.T) {
	f := newFixture(t)
	f.plugin.Classify = nsutil.StandInClassifier("ifb")
	f.plugin.GSSFlagPath = gssFlag(t, "1")
	f.moveInENI("lgt-eni9", "eth1")
	f.wrapper(t)
	if _, err := f.wrapAdd("1.1.0", nil); err != nil {
		t.Fatal(err)
	}
	if err := f.wrapDel(f.podPath, "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if l := f.nodeLink("lgt-eni9"); l == nil {
		t.Fatal("ENI stand-in not returned to the host under its name")
	}
	f.mustBeGone(f.hostVeth.Name)
	inNS(t, f.pod, func() error {
		if l, err := netlinksafe.LinkByName("eth1"); err == nil {
			t.Errorf("eth1 still in the doomed netns: %v", l.Attrs().Name)
		}
		return nil
	})
	if tombs := tombstones(t, f.stateDir); len(tombs) != 1 {
		t.Errorf("doomed netns: tombstones %v, want one kept", tombs)
	}
}

// GC reaps the links of a doomed netns's tombstone once the netns leaked,
// and keeps the tombstone for the boot (it used to drop it with the links).
func TestGCKeepsDoomedTombstoneAfterReapingItsLinks(t *testing.T) {
	f := newFixture(t)
	f.plugin.GSSFlagPath = gssFlag(t, "1")
	f.add("1.1.0")
	if err := f.del(f.podPath, "1.1.0", f.prevResult()); err != nil {
		t.Fatal(err)
	}
	nsutil.LeakBySocket(t, f.pod)
	if err := f.gc(nil); err != nil {
		t.Fatalf("GC: %v", err)
	}
	f.mustBeGone(f.hostVeth.Name)
	if n := len(tombstones(t, f.stateDir)); n != 1 {
		t.Fatalf("doomed netns: %d tombstones after GC reaped its links, want 1 kept", n)
	}
}
