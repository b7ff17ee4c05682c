package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/test/nsutil"
	"github.com/leakguard/leakguard/test/scantest"
)

// binary is leakguardctl built once for the tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "leakguardctl-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "leakguardctl")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build leakguardctl: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is a throw-away host with a leaked pod owned by a leakguard record,
// a leaked pod nobody recorded, and a live (mounted) recorded pod.
type node struct {
	t        *testing.T
	ns       ns.NetNS
	stateDir string
	owned    *scantest.Pod
	orphan   *scantest.Pod
	live     *scantest.Pod
}

func newNode(t *testing.T) *node {
	n := &node{t: t, ns: nsutil.NewNS(t), stateDir: filepath.Join(t.TempDir(), "state")}
	st, err := store.Open(n.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	n.owned = scantest.NewPod(t, n.ns, "lgc-owned")
	n.orphan = scantest.NewPod(t, n.ns, "lgc-orphan")
	n.live = scantest.NewPod(t, n.ns, "lgc-live")
	for cid, p := range map[string]*scantest.Pod{"ctr-owned": n.owned, "ctr-live": n.live} {
		r := &record.Record{
			Key:   record.Key{Network: "lgnet", ContainerID: cid, IfName: "eth0"},
			Netns: p.ID, HostLinks: []podlink.Identity{p.Host}, GSSProxyArmed: cid == "ctr-owned",
		}
		if err := st.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	nsutil.LeakBySocket(t, n.owned.NS)
	nsutil.LeakBySocket(t, n.orphan.NS)
	scantest.KeepByMountOnly(t, n.live.NS)
	return n
}

// run runs leakguardctl in the node netns; it returns stdout and the exit code.
func (n *node) run(args ...string) (string, int) {
	n.t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.ns.Path(), binary}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		n.t.Fatalf("run leakguardctl %v: %v", args, err)
	}
	if stderr.Len() > 0 {
		n.t.Logf("leakguardctl %v stderr:\n%s", args, stderr.String())
	}
	return stdout.String(), cmd.ProcessState.ExitCode()
}

func (n *node) links() map[string]bool {
	n.t.Helper()
	names := map[string]bool{}
	err := n.ns.Do(func(ns.NetNS) error {
		ls, err := netlinksafe.LinkList()
		for _, l := range ls {
			names[l.Attrs().Name] = true
		}
		return err
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return names
}

func (n *node) mustHave(present ...string) {
	n.t.Helper()
	got := n.links()
	for _, name := range []string{"lgc-owned", "lgc-orphan", "lgc-live"} {
		want := false
		for _, p := range present {
			want = want || p == name
		}
		if got[name] != want {
			n.t.Errorf("link %s present = %v, want %v", name, got[name], want)
		}
	}
}

// scanJSON is the documented JSON of `scan --json`, decoded strictly.
type scanJSON struct {
	Time            time.Time       `json:"time"`
	DurationSeconds float64         `json:"durationSeconds"`
	HostNetns       json.RawMessage `json:"hostNetns"`
	ReachableNetns  int             `json:"reachableNetns"`
	LeakedNetns     int             `json:"leakedNetns"`
	Leaks           []struct {
		HostLink    string `json:"hostLink"`
		Ifindex     int    `json:"ifindex"`
		MAC         string `json:"mac"`
		Kind        string `json:"kind"`
		NSID        int    `json:"nsid"`
		PeerIfindex int    `json:"peerIfindex"`
		Owner       *struct {
			Network     string `json:"network"`
			ContainerID string `json:"containerID"`
			IfName      string `json:"ifName"`
			Kind        string `json:"kind"`
			File        string `json:"file"`
		} `json:"owner"`
		GSSProxyArmed bool `json:"gssProxyArmed"`
	} `json:"leaks"`
	Slab struct {
		Available        bool   `json:"available"`
		ActiveObjects    int    `json:"activeObjects"`
		ReachableObjects int    `json:"reachableObjects"`
		Leaked           int    `json:"leakedEstimate"`
		CPUSlabObjects   int    `json:"cpuSlabObjects"`
		LeakedLowerBound int    `json:"leakedLowerBound"`
		Reason           string `json:"reason"`
	} `json:"slab"`
	UnreadableProcesses []int             `json:"unreadableProcesses"`
	Discarded           []json.RawMessage `json:"discarded"`
	Warnings            []string          `json:"warnings"`
}

func TestScanOutputs(t *testing.T) {
	n := newNode(t)
	prom := filepath.Join(t.TempDir(), "leakguard.prom")

	out, code := n.run("scan", "--json", "--state-dir", n.stateDir, "--prometheus", prom)
	if code != 0 {
		t.Fatalf("scan --json exit %d", code)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	var rep scanJSON
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("scan --json output does not parse as documented: %v\n%s", err, out)
	}
	if rep.LeakedNetns != 2 || len(rep.Leaks) != 2 {
		t.Fatalf("leakedNetns %d, leaks %+v; want lgc-owned and lgc-orphan", rep.LeakedNetns, rep.Leaks)
	}
	for _, l := range rep.Leaks {
		switch l.HostLink {
		case "lgc-owned":
			if l.Owner == nil || l.Owner.ContainerID != "ctr-owned" || l.Owner.Network != "lgnet" || l.Owner.IfName != "eth0" ||
				l.Owner.Kind != "record" || !l.GSSProxyArmed || l.NSID != n.owned.Host.NetNSID || l.Ifindex != n.owned.Host.Index ||
				l.MAC != n.owned.Host.MAC || l.Kind != "veth" {
				t.Errorf("owned leak = %+v (owner %+v); want %+v owned by lgnet/ctr-owned/eth0, armed", l, l.Owner, n.owned.Host)
			}
		case "lgc-orphan":
			if l.Owner != nil || l.GSSProxyArmed || l.NSID != n.orphan.Host.NetNSID || l.Ifindex != n.orphan.Host.Index {
				t.Errorf("orphan leak = %+v; want %+v, no owner", l, n.orphan.Host)
			}
		default:
			t.Errorf("unexpected leak %+v", l)
		}
	}

	metrics := parseProm(t, prom)
	want := map[string]float64{
		`leakguard_scan_success`:                     1,
		`leakguard_leaked_netns`:                     2,
		`leakguard_leaked_host_links{owned="true"}`:  1,
		`leakguard_leaked_host_links{owned="false"}`: 1,
		`leakguard_gss_proxy_armed_netns`:            1,
		fmt.Sprintf(`leakguard_leaked_host_link{gss_proxy_armed="true",ifindex="%d",kind="veth",mac="%s",name="lgc-owned",nsid="%d",owner="lgnet/ctr-owned/eth0",owner_kind="record"}`, n.owned.Host.Index, n.owned.Host.MAC, n.owned.Host.NetNSID): 1,
		fmt.Sprintf(`leakguard_leaked_host_link{gss_proxy_armed="false",ifindex="%d",kind="veth",mac="%s",name="lgc-orphan",nsid="%d",owner="",owner_kind=""}`, n.orphan.Host.Index, n.orphan.Host.MAC, n.orphan.Host.NetNSID):                      1,
	}
	for k, v := range want {
		if got, ok := metrics[k]; !ok || got != v {
			t.Errorf("metric %s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if _, ok := metrics["leakguard_slab_leaked_netns_estimate"]; ok != rep.Slab.Available {
		t.Errorf("slab estimate metric present = %v, slab available = %v", ok, rep.Slab.Available)
	}
	if ents, _ := filepath.Glob(filepath.Join(filepath.Dir(prom), "*")); len(ents) != 1 {
		t.Errorf("textfile dir holds %v; want only the .prom file (no temp files left)", ents)
	}

	table, code := n.run("scan", "--state-dir", n.stateDir)
	if code != 0 || !strings.Contains(table, "HOST LINK") || !strings.Contains(table, "lgc-orphan") ||
		!strings.Contains(table, "lgnet/ctr-owned/eth0 (record)") || strings.Contains(table, "lgc-live") {
		t.Errorf("scan table (exit %d):\n%s", code, table)
	}
	n.mustHave("lgc-owned", "lgc-orphan", "lgc-live")
}

var promLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$`)
var promLabel = regexp.MustCompile(`^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)`)

// parseProm parses a textfile (exposition format 0.0.4) strictly enough for
// node_exporter: every sample's family has a TYPE line before it, label
// values are quoted and escaped. Keys are name{labels sorted by name}.
func parseProm(t *testing.T, path string) map[string]float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	typed := map[string]bool{}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 4 && f[0] == "#" && f[1] == "TYPE" {
			typed[f[2]] = true
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		m := promLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("bad metric line %q", line)
		}
		if !typed[m[1]] {
			t.Fatalf("sample %q before its TYPE line", line)
		}
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			t.Fatalf("bad value in %q", line)
		}
		var labels []string
		for rest := m[3]; rest != ""; {
			lm := promLabel.FindStringSubmatch(rest)
			if lm == nil {
				t.Fatalf("bad labels in %q", line)
			}
			labels = append(labels, lm[1]+`="`+lm[2]+`"`)
			rest = rest[len(lm[0]):]
		}
		key := m[1]
		if len(labels) > 0 {
			sortStrings(labels)
			key += "{" + strings.Join(labels, ",") + "}"
		}
		if _, dup := out[key]; dup {
			t.Fatalf("duplicate sample %s", key)
		}
		out[key] = v
	}
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// reapJSON is the documented JSON of `reap --json`.
type reapJSON struct {
	DryRun  bool `json:"dryRun"`
	Results []struct {
		HostLink         string `json:"hostLink"`
		Action           string `json:"action"`
		Reason           string `json:"reason"`
		StateFileRemoved string `json:"stateFileRemoved"`
	} `json:"results"`
}

func (n *node) reap(args ...string) map[string]string {
	n.t.Helper()
	out, code := n.run(append([]string{"reap", "--json", "--state-dir", n.stateDir}, args...)...)
	if code != 0 {
		n.t.Fatalf("reap %v: exit %d\n%s", args, code, out)
	}
	var r reapJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		n.t.Fatalf("reap --json output: %v\n%s", err, out)
	}
	actions := map[string]string{}
	for _, res := range r.Results {
		actions[res.HostLink] = res.Action
	}
	return actions
}

func TestReap(t *testing.T) {
	n := newNode(t)

	if got := n.reap("--dry-run", "--all-orphans"); got["lgc-owned"] != "would-delete" || got["lgc-orphan"] != "would-delete" || len(got) != 2 {
		t.Errorf("dry run actions = %v", got)
	}
	n.mustHave("lgc-owned", "lgc-orphan", "lgc-live")

	if got := n.reap(); got["lgc-owned"] != "deleted" || got["lgc-orphan"] != "skipped" || len(got) != 2 {
		t.Errorf("default reap actions = %v; want owned deleted, orphan skipped", got)
	}
	n.mustHave("lgc-orphan", "lgc-live")

	if got := n.reap("--all-orphans"); got["lgc-orphan"] != "deleted" || len(got) != 1 {
		t.Errorf("reap --all-orphans actions = %v; want the orphan deleted", got)
	}
	n.mustHave("lgc-live")

	// Both records stay (the owned leak's for its DEL or GC to finish:
	// routes, rules, pin); a pin no record names is listed as stray.
	pinDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(pinDir, "stray"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := n.run("records", "--json", "--state-dir", n.stateDir, "--pin-dir", pinDir)
	var recs struct {
		Entries []struct {
			Kind        string `json:"kind"`
			ContainerID string `json:"containerID"`
		} `json:"entries"`
		StrayPins []struct {
			Path  string          `json:"path"`
			Netns json.RawMessage `json:"netns"`
		} `json:"strayPins"`
	}
	if err := json.Unmarshal([]byte(out), &recs); code != 0 || err != nil {
		t.Fatalf("records --json: exit %d, %v\n%s", code, err, out)
	}
	if len(recs.Entries) != 2 || recs.Entries[0].Kind != "record" || recs.Entries[1].Kind != "record" {
		t.Errorf("records after reap = %+v; want ctr-live's and ctr-owned's records", recs.Entries)
	}
	if len(recs.StrayPins) != 1 || recs.StrayPins[0].Path != filepath.Join(pinDir, "stray") || recs.StrayPins[0].Netns != nil {
		t.Errorf("stray pins = %+v; want %s/stray holding no netns", recs.StrayPins, pinDir)
	}
	table, code := n.run("records", "--state-dir", n.stateDir)
	if code != 0 || !strings.Contains(table, "ctr-live") || !strings.Contains(table, "lgc-live#") {
		t.Errorf("records table (exit %d):\n%s", code, table)
	}
}

func TestExitCodes(t *testing.T) {
	n := &node{t: t, ns: nsutil.NewNS(t)}
	for _, c := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"bogus"}, 2},
		{[]string{"scan", "--no-such-flag"}, 2},
		{[]string{"scan", "extra"}, 2},
		{[]string{"scan", "-h"}, 0},
		{[]string{"scan", "--state-dir", "relative/dir"}, 1},
		{[]string{"scan", "--state-dir", t.TempDir(), "--prometheus", "/nonexistent-dir/x.prom"}, 1},
		{[]string{"records", "--state-dir", filepath.Join(t.TempDir(), "none")}, 0},
	} {
		if _, code := n.run(c.args...); code != c.code {
			t.Errorf("leakguardctl %v: exit %d, want %d", c.args, code, c.code)
		}
	}
}
