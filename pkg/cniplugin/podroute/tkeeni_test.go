package podroute

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/leakguard/leakguard/test/cnitest"
	"github.com/leakguard/leakguard/test/nsutil"
)

const tkeConf = `{"cniVersion":"1.1.0","name":"tke-eni-test","type":"tke-eni","ip":"10.77.0.5/32",
"table":100,"toPodPriority":512,"fromPodPriority":1536,"eniLink":"eni0"}`

// tkeENI returns the tke-eni test plugin: from $LEAKGUARD_BIN_DIR (make
// test) or built into a temp dir.
func tkeENI(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("LEAKGUARD_BIN_DIR"); dir != "" {
		return filepath.Join(dir, "test", "tke-eni")
	}
	root, err := cnitest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "tke-eni")
	cmd := exec.Command("go", "build", "-o", bin, "./test/cmd/tke-eni")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./test/cmd/tke-eni: %v\n%s", err, out)
	}
	return bin
}

// runPlugin execs the plugin with the node netns as its host netns.
func (n *node) runPlugin(bin, verb, netns string) []byte {
	n.t.Helper()
	cmd := exec.Command("nsenter", "--net="+n.ns.Path(), bin)
	cmd.Env = []string{
		"CNI_COMMAND=" + verb,
		"CNI_CONTAINERID=ctr-podroute",
		"CNI_NETNS=" + netns,
		"CNI_IFNAME=eth0",
		"CNI_PATH=" + filepath.Dir(bin),
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
		"PATH=" + os.Getenv("PATH"),
	}
	cmd.Stdin = bytes.NewBufferString(tkeConf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		n.t.Fatalf("tke-eni %s: %v\nstdout: %s\nstderr: %s", verb, err, out, stderr.Bytes())
	}
	return out
}

// The leak with the real tke-eni-style plugin: its DEL without a netns path
// leaves the rules (and, with the host veth, the /32 route); after the host
// veth is reaped, Reap removes exactly the recorded rules.
func TestTKEENIChainThroughTheLeak(t *testing.T) {
	bin := tkeENI(t)
	n := newNode(t)
	n.bridge("eni0")
	// Unrelated state Reap must leave alone.
	n.addRule(1536, "10.77.0.6/32", "", 100)
	n.addRoute("10.77.0.0/24", "eni0", 254)

	pod := nsutil.NewNS(t)
	out := n.runPlugin(bin, "ADD", pod.Path())
	var res struct {
		Interfaces []struct{ Name, Sandbox string }
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Interfaces) != 2 || res.Interfaces[0].Sandbox != "" {
		t.Fatalf("ADD result %s: %v", out, err)
	}
	hostVeth := res.Interfaces[0].Name

	st := roundTrip(t, n.snapshot("10.77.0.5/32"))
	wantRules := sorted(
		"512 from= to=10.77.0.5/32 table=254 ip=10.77.0.5",
		"1536 from=10.77.0.5/32 to= table=100 ip=10.77.0.5",
	)
	equalKeys(t, "rules", ruleKeys(st.Rules), wantRules)
	equalKeys(t, "routes", routeKeys(st.Routes), []string{
		fmt.Sprintf("10.77.0.5/32 dev=%s table=254 ip=10.77.0.5", hostVeth),
	})

	// The runtime removes the path; the netns lives on (auth_rpcgss leak).
	nsutil.LeakBySocket(t, pod)
	n.runPlugin(bin, "DEL", pod.Path())
	after := n.snapshot("10.77.0.5/32")
	equalKeys(t, "rules after the plugin's DEL", ruleKeys(after.Rules), wantRules)
	if len(after.Routes) != 1 {
		t.Fatalf("the plugin's DEL touched the route: %+v", after.Routes)
	}

	// leakguard's host-link reaping takes the veth, and its route, away.
	n.delLink(hostVeth)
	rep, err := n.reap(st, func(string) bool { return false })
	if err != nil {
		t.Fatalf("reap: %v", err)
	}
	if len(rep.Deleted) != 2 || len(rep.Gone) != 1 || len(rep.Kept) != 0 {
		t.Errorf("report %+v", rep)
	}
	if left := n.snapshot("10.77.0.5/32"); !left.Empty() {
		t.Errorf("left behind: %+v", left)
	}
	if !contains(n.liveRules(), "1536 from=10.77.0.6/32 to= table=100 ip=") ||
		len(n.liveRoutes("10.77.0.0/24")) != 1 || len(n.liveRoutes("0.0.0.0/0")) != 1 {
		t.Error("unrecorded state was deleted (another pod's rule, the /24, the ENI table's default route)")
	}
	if rep, err := n.reap(st, nil); err != nil || len(rep.Deleted) != 0 || len(rep.Gone) != 3 {
		t.Errorf("second reap: err %v, %+v", err, rep)
	}
}

// Without the host veth reaped, the route is still the recorded one and goes
// too; a claimed IP keeps everything.
func TestTKEENIClaimedAndRouteReap(t *testing.T) {
	bin := tkeENI(t)
	n := newNode(t)
	n.bridge("eni0")
	pod := nsutil.NewNS(t)
	n.runPlugin(bin, "ADD", pod.Path())
	st := n.snapshot("10.77.0.5/32")
	if len(st.Rules) != 2 || len(st.Routes) != 1 {
		t.Fatalf("snapshot %+v", st)
	}

	rep, err := n.reap(st, func(ip string) bool { return ip == "10.77.0.5" })
	if err != nil || len(rep.Deleted) != 0 || len(rep.Kept) != 3 {
		t.Fatalf("claimed: err %v, %+v", err, rep)
	}
	if now := n.snapshot("10.77.0.5/32"); len(now.Rules) != 2 || len(now.Routes) != 1 {
		t.Fatalf("claimed state was touched: %+v", now)
	}

	rep, err = n.reap(st, nil)
	if err != nil || len(rep.Deleted) != 3 {
		t.Fatalf("unclaimed: err %v, %+v", err, rep)
	}
	if left := n.snapshot("10.77.0.5/32"); !left.Empty() {
		t.Errorf("left behind: %+v", left)
	}
	n.runPlugin(bin, "DEL", pod.Path())
}
