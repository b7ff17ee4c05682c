package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/test/nsutil"
)

// These tests drive the real binary the way a runtime does: exec with CNI_*
// variables and the config on stdin, from inside a throw-away node netns.

var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "leakguard-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "leakguard")
	if out, err := exec.Command("go", "build", "-o", pluginBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build leakguard: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type pod struct {
	cid   string
	netns ns.NetNS
	path  string
	host  net.Interface
	cont  net.Interface
}

func newPod(t *testing.T, node ns.NetNS, i int) *pod {
	t.Helper()
	p := &pod{cid: fmt.Sprintf("c%03d-%d", i, time.Now().UnixNano()), netns: nsutil.NewNS(t)}
	p.path = p.netns.Path()
	err := p.netns.Do(func(ns.NetNS) error {
		var err error
		p.host, p.cont, err = ip.SetupVeth("eth0", 1500, "", node)
		return err
	})
	if err != nil {
		t.Fatalf("veth for pod %d: %v", i, err)
	}
	return p
}

func (p *pod) conf(stateDir string) []byte {
	prev := &current.Result{
		CNIVersion: "1.0.0",
		Interfaces: []*current.Interface{
			{Name: p.host.Name, Mac: p.host.HardwareAddr.String()},
			{Name: "eth0", Mac: p.cont.HardwareAddr.String(), Sandbox: p.path},
		},
	}
	b, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": "bin-test", "type": "leakguard",
		"stateDir": stateDir, "prevResult": prev,
	})
	return b
}

// run execs the plugin inside node (the child inherits the locked thread's
// netns) and returns its stdout, its stderr and how it exited.
func run(node ns.NetNS, cmd, cid, netns string, conf []byte) ([]byte, []byte, error) {
	var o, e bytes.Buffer
	c := exec.Command(pluginBin)
	c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + cid, "CNI_NETNS=" + netns, "CNI_IFNAME=eth0", "CNI_PATH=/nonexistent"}
	c.Stdin, c.Stdout, c.Stderr = bytes.NewReader(conf), &o, &e
	err := node.Do(func(ns.NetNS) error { return c.Run() })
	return o.Bytes(), e.Bytes(), err
}

// 64 pods ADD concurrently, then DEL concurrently (every other one leaked):
// no record is lost or corrupt, leaked pods' host veths are reaped, live
// pods' are left to the main plugin (a tombstone each), nothing else remains.
func TestConcurrentAddDel64(t *testing.T) {
	node := nsutil.NewNS(t)
	state := filepath.Join(t.TempDir(), "state")
	const n = 64
	pods := make([]*pod, n)
	for i := range pods {
		pods[i] = newPod(t, node, i)
	}
	parallel(t, n, func(i int) error {
		out, stderr, err := run(node, "ADD", pods[i].cid, pods[i].path, pods[i].conf(state))
		if err != nil {
			return fmt.Errorf("ADD %d: %v: %s %s", i, err, out, stderr)
		}
		return nil
	})
	files, _ := filepath.Glob(filepath.Join(state, "*.json"))
	if len(files) != n {
		t.Fatalf("%d records after %d ADDs", len(files), n)
	}
	for _, f := range files {
		var r record.Record
		b, _ := os.ReadFile(f)
		if err := json.Unmarshal(b, &r); err != nil || r.Validate() != nil || len(r.HostLinks) != 1 {
			t.Fatalf("record %s corrupt or incomplete: %v %s", f, err, b)
		}
	}
	for i := 0; i < n; i += 2 {
		nsutil.LeakBySocket(t, pods[i].netns)
	}
	parallel(t, n, func(i int) error {
		out, stderr, err := run(node, "DEL", pods[i].cid, pods[i].path, pods[i].conf(state))
		if err != nil {
			return fmt.Errorf("DEL %d: %v: %s %s", i, err, out, stderr)
		}
		return nil
	})
	for i, p := range pods {
		var err error
		_ = node.Do(func(ns.NetNS) error { _, err = netlink.LinkByIndex(p.host.Index); return nil })
		if leaked := i%2 == 0; leaked == (err == nil) {
			t.Errorf("pod %d (leaked=%v): host veth present=%v", i, leaked, err == nil)
		}
	}
	// Live pods' host sides are the main plugin's job: they leave
	// tombstones (for GC and the scan), and nothing else remains.
	ents, _ := os.ReadDir(state)
	for _, e := range ents {
		if e.Name() != "tombstones" {
			t.Errorf("unexpected file left in state dir: %s", e.Name())
		}
	}
	ents, _ = os.ReadDir(filepath.Join(state, "tombstones"))
	tombs := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".tomb") {
			t.Errorf("unexpected file left in tombstone dir: %s", e.Name())
			continue
		}
		tombs++
		var r record.Record
		b, _ := os.ReadFile(filepath.Join(state, "tombstones", e.Name()))
		if err := json.Unmarshal(b, &r); err != nil || r.Validate() != nil || len(r.HostLinks) != 1 {
			t.Errorf("bad tombstone %s: %v %s", e.Name(), err, b)
		}
	}
	if tombs != n/2 {
		t.Fatalf("%d tombstones, want %d (one per live pod)", tombs, n/2)
	}
}

// Killing ADD at random points never leaves a partial record: whatever is
// under a record name is complete and valid.
func TestAddKilledMidWriteLeavesNoPartialRecord(t *testing.T) {
	node := nsutil.NewNS(t)
	state := filepath.Join(t.TempDir(), "state")
	p := newPod(t, node, 0)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	killed := 0
	for i := 0; i < 60; i++ {
		c := exec.Command(pluginBin)
		c.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + fmt.Sprintf("%s-%d", p.cid, i%6), "CNI_NETNS=" + p.path, "CNI_IFNAME=eth0", "CNI_PATH=/x"}
		c.Stdin = bytes.NewReader(p.conf(state))
		var startErr error
		_ = node.Do(func(ns.NetNS) error { startErr = c.Start(); return nil })
		if startErr != nil {
			t.Fatal(startErr)
		}
		time.Sleep(time.Duration(rng.Intn(4000)) * time.Microsecond)
		_ = c.Process.Signal(syscall.SIGKILL)
		if err := c.Wait(); err != nil {
			killed++
		}
	}
	if killed == 0 {
		t.Fatal("no ADD was killed: the test proved nothing")
	}
	files, _ := filepath.Glob(filepath.Join(state, "*.json"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		var r record.Record
		if err := json.Unmarshal(b, &r); err != nil || r.Validate() != nil {
			t.Fatalf("partial record %s after kill: %v %q", f, err, b)
		}
	}
	t.Logf("%d of 60 ADDs killed, %d complete records", killed, len(files))
}

// Errors reach the runtime as CNI error JSON on stdout with the right code,
// and nothing else is printed there.
func TestErrorsAreCNIJSON(t *testing.T) {
	node := nsutil.NewNS(t)
	p := newPod(t, node, 0)
	state := filepath.Join(t.TempDir(), "state")
	var bad map[string]any
	_ = json.Unmarshal(p.conf(state), &bad)
	bad["logLevel"] = "chatty"
	badConf, _ := json.Marshal(bad)
	noPrev, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "n", "type": "leakguard", "stateDir": state})
	for _, c := range []struct {
		name string
		conf []byte
		code uint
		msg  string
	}{
		{"bad logLevel", badConf, 7, "logLevel"},
		{"no prevResult", noPrev, 7, "prevResult"},
		{"not JSON (decoding failure, from skel)", []byte("{"), 6, "unmarshal"},
	} {
		out, _, err := run(node, "ADD", p.cid, p.path, c.conf)
		if err == nil {
			t.Fatalf("%s: ADD succeeded", c.name)
		}
		var e struct {
			Code uint   `json:"code"`
			Msg  string `json:"msg"`
		}
		if jerr := json.Unmarshal(out, &e); jerr != nil || e.Code != c.code || !strings.Contains(e.Msg, c.msg) {
			t.Fatalf("%s: stdout %q; want code %d mentioning %q", c.name, out, c.code, c.msg)
		}
	}
}

// A DEL whose CNI_NETNS is the host's own netns (a /proc/<pid>/ns/net whose
// pid was reused by a host process) succeeds, reaps the leaked pod's host
// veth by identity, and leaves the host's links alone.
func TestDelWithHostNetnsPathSucceeds(t *testing.T) {
	node := nsutil.NewNS(t)
	state := filepath.Join(t.TempDir(), "state")
	p := newPod(t, node, 0)
	if out, stderr, err := run(node, "ADD", p.cid, p.path, p.conf(state)); err != nil {
		t.Fatalf("ADD: %v %s %s", err, out, stderr)
	}
	nsutil.LeakBySocket(t, p.netns)
	// A "host process": sleep started in the node netns.
	sleeper := exec.Command("sleep", "30")
	if err := node.Do(func(ns.NetNS) error { return sleeper.Start() }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	hostPath := fmt.Sprintf("/proc/%d/ns/net", sleeper.Process.Pid)

	out, stderr, err := run(node, "DEL", p.cid, hostPath, p.conf(state))
	if err != nil {
		t.Fatalf("DEL with the host netns as CNI_NETNS must succeed: %v %s %s", err, out, stderr)
	}
	var gone error
	_ = node.Do(func(ns.NetNS) error { _, gone = netlink.LinkByIndex(p.host.Index); return nil })
	if gone == nil {
		t.Fatal("the leaked pod's host veth should be reaped")
	}
	var lo error
	_ = node.Do(func(ns.NetNS) error { _, lo = netlinksafe.LinkByName("lo"); return nil })
	if lo != nil {
		t.Fatalf("host lo: %v", lo)
	}
}

func parallel(t *testing.T, n int, fn func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := fn(i); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// The DEL failures README documents, and only those: each comes from skel
// before leakguard runs (or from CNI fields leakguard cannot decode), and
// ADD fails on the same input, so no attachment was ever recorded from it.
// An invalid leakguard field is not among them: DEL works around it.
func TestDelFailsOnlyAsDocumented(t *testing.T) {
	node := nsutil.NewNS(t)
	p := newPod(t, node, 0)
	state := filepath.Join(t.TempDir(), "state")
	good := p.conf(state)
	with := func(k string, v any) []byte {
		var m map[string]any
		_ = json.Unmarshal(good, &m)
		m[k] = v
		b, _ := json.Marshal(m)
		return b
	}
	env := func(drop string, set ...string) []string {
		base := map[string]string{"CNI_CONTAINERID": p.cid, "CNI_NETNS": p.path, "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}
		delete(base, drop)
		for i := 0; i+1 < len(set); i += 2 {
			base[set[i]] = set[i+1]
		}
		var out []string
		for k, v := range base {
			out = append(out, k+"="+v)
		}
		return out
	}
	for _, c := range []struct {
		name string
		env  []string
		conf []byte
		code uint
	}{
		{"no CNI_CONTAINERID", env("CNI_CONTAINERID"), good, 4},
		{"no CNI_IFNAME", env("CNI_IFNAME"), good, 4},
		{"no CNI_PATH", env("CNI_PATH"), good, 4},
		{"bad container ID", env("", "CNI_CONTAINERID", "a/b"), good, 4},
		{"bad ifname", env("", "CNI_IFNAME", "a/b"), good, 4},
		{"not JSON", env(""), []byte("{"), 6},
		{"name mistyped", env(""), with("name", 7), 6},
		{"no name", env(""), with("name", ""), 7},
		{"bad name", env(""), with("name", "a/b"), 7},
		{"unknown cniVersion", env(""), with("cniVersion", "9.9.9"), 1},
	} {
		for _, cmd := range []string{"DEL", "ADD"} {
			var o bytes.Buffer
			x := exec.Command(pluginBin)
			x.Env = slices.Concat(c.env, []string{"CNI_COMMAND=" + cmd})
			x.Stdin, x.Stdout = bytes.NewReader(c.conf), &o
			err := node.Do(func(ns.NetNS) error { return x.Run() })
			var e struct {
				Code uint `json:"code"`
			}
			if err == nil || json.Unmarshal(o.Bytes(), &e) != nil || e.Code != c.code {
				t.Errorf("%s: %s = %v, stdout %q; want code %d", c.name, cmd, err, o.Bytes(), c.code)
			}
		}
	}
	// Invalid leakguard fields fail ADD (code 7) but never DEL.
	for _, conf := range [][]byte{with("logLevel", "chatty"), with("stateDir", 7), with("pinNetns", "yes"), with("pinDir", "rel")} {
		if out, _, err := run(node, "DEL", p.cid, p.path, conf); err != nil {
			t.Errorf("DEL with %s failed: %v %s", conf, err, out)
		}
		if _, _, err := run(node, "ADD", p.cid, p.path, conf); err == nil {
			t.Errorf("ADD with %s succeeded", conf)
		}
	}
}
