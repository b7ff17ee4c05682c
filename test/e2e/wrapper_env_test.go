package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/leakguard/leakguard/test/cnitest"
)

// wrappedChains are the wrapper-mode examples of conf/: one .conf each,
// leakguard outside, the main plugin as its delegate, pinNetns on.
var wrappedChains = []chain{
	{name: "bridge", file: "10-bridge-wrapped.conf", masq: true, hostLocal: true},
	{name: "ptp", file: "10-ptp-wrapped.conf", masq: true, hostLocal: true},
	{
		name:          "tke-eni",
		file:          "10-tke-eni-wrapped.conf",
		podArgs:       tkePodArgs,
		prepareNode:   addENILink,
		podOwnedRules: true,
	},
}

func boolPtr(b bool) *bool { return &b }

// id is the pod's container ID, as cnitool derives it.
func (p *pod) id() string { return cnitest.ContainerID(p.path) }

// podIP is the pod's first address from its ADD result.
func (p *pod) podIP() net.IP { return p.result.IPs[0].Address.IP }

// ipHeld reports whether host-local still holds ip for the network: it
// keeps one file per allocated address in <dataDir>/<network>/.
func (e *env) ipHeld(ip net.IP) bool {
	e.t.Helper()
	_, err := os.Stat(filepath.Join(e.ipamDir, e.network, ip.String()))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.t.Fatalf("host-local data dir: %v", err)
	}
	return err == nil
}

var natChainRE = regexp.MustCompile(`(?:-A|-j) (CNI-[0-9a-f]+)`)

// natRules returns the node's nat table lines (`iptables -t nat -S`) that
// belong to the pod: the rules carrying its container ID (bridge's and ptp's
// masquerade, commented `id: "<containerID>"`) and the declaration of every
// CNI-<hash> chain they use.
func (e *env) natRules(p *pod) []string { return e.natRulesOf(p.id()) }

func (e *env) natRulesOf(containerID string) []string {
	e.t.Helper()
	cmd := exec.Command("nsenter", "--net="+e.node.Path(), "--", "iptables", "-w", "-t", "nat", "-S")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("iptables -t nat -S in the node netns: %v: %s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	id := `id: \"` + containerID + `\"`
	chains := map[string]bool{}
	var mine []string
	for _, l := range lines {
		if strings.Contains(l, id) {
			mine = append(mine, l)
			for _, m := range natChainRE.FindAllStringSubmatch(l, -1) {
				chains[m[1]] = true
			}
		}
	}
	for _, l := range lines {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "-N" && chains[f[1]] {
			mine = append(mine, l)
		}
	}
	return mine
}

// assertMasquerade checks the pod's masquerade chain: declared, jumped to
// from POSTROUTING, MASQUERADE inside.
func (e *env) assertMasquerade(p *pod) {
	e.t.Helper()
	rules := strings.Join(e.natRules(p), "\n")
	for _, want := range []string{"-N CNI-", "-A POSTROUTING -s " + p.podIP().String() + "/32", "-j MASQUERADE"} {
		if !strings.Contains(rules, want) {
			e.t.Fatalf("pod's masquerade rules lack %q; have:\n%s", want, rules)
		}
	}
}

// pinsLeft lists what is left of leakguard's pins: mount points below the
// pin dir (in our mount namespace, which cnitool shares) and entries in it.
func (e *env) pinsLeft() []string {
	e.t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	var left []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], e.pinDir+"/") {
			left = append(left, "mount "+fields[4])
		}
	}
	ents, err := os.ReadDir(e.pinDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.t.Fatalf("read pin dir: %v", err)
	}
	for _, ent := range ents {
		left = append(left, "file "+ent.Name())
	}
	return left
}

// stateFiles lists the state dir's files (records, tombstones) naming the
// pod's container ID.
func (e *env) stateFiles(p *pod) []string { return e.stateFilesOf(p.id()) }

func (e *env) stateFilesOf(containerID string) []string {
	e.t.Helper()
	ents, err := os.ReadDir(e.stateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		e.t.Fatalf("read state dir: %v", err)
	}
	var out []string
	for _, ent := range ents {
		if ent.Type().IsRegular() && !strings.HasSuffix(ent.Name(), ".lock") &&
			strings.Contains(ent.Name(), containerID) {
			out = append(out, ent.Name())
		}
	}
	return out
}

// logged returns leakguard's DEL log entries about the pod with msg.
func (e *env) logged(p *pod, msg string) []map[string]any { return e.loggedOf(p.id(), "DEL", msg) }

// loggedOf returns leakguard's log entries about containerID for verb with msg.
func (e *env) loggedOf(containerID, verb, msg string) []map[string]any {
	e.t.Helper()
	raw, err := os.ReadFile(e.logFile)
	if err != nil {
		e.t.Fatalf("read leakguard log: %v", err)
	}
	var out []map[string]any
	for _, line := range bytes.Split(raw, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		if m["cmd"] == verb && m["msg"] == msg && m["containerID"] == containerID {
			out = append(out, m)
		}
	}
	return out
}

// assertDelegateDel checks, from leakguard's log, that the main plugin's
// DEL ran once more and with CNI_NETNS netns.
func (e *env) assertDelegateDel(p *pod, runsBefore int, netns string) {
	e.t.Helper()
	runs := e.logged(p, "main plugin's DEL done")
	if len(runs) != runsBefore+1 {
		e.t.Fatalf("want one more logged run of the main plugin's DEL, got %d after %d", len(runs), runsBefore)
	}
	last := runs[len(runs)-1]
	if last["delegate"] != e.chain.mainType() || last["delegateNetns"] != netns {
		e.t.Errorf("main plugin's DEL: want %s with CNI_NETNS %q, log says %v with %q",
			e.chain.mainType(), netns, last["delegate"], last["delegateNetns"])
	}
}

// pinPath is where leakguard pins the pod's eth0 netns (the default layout).
func (e *env) pinPath(p *pod) string { return e.pinPathOf(p.id(), "eth0") }

func (e *env) pinPathOf(containerID, ifname string) string {
	return filepath.Join(e.pinDir, e.network+"_"+containerID+"_"+ifname)
}

// assertPinned checks the pod's netns is pinned at its pin path.
func (e *env) assertPinned(p *pod) {
	e.t.Helper()
	if left := e.pinsLeft(); !slices.Contains(left, "mount "+e.pinPath(p)) {
		e.t.Fatalf("pod netns not pinned at %s; pins: %v", e.pinPath(p), left)
	}
}
