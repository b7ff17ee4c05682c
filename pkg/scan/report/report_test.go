package report

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/scan/leakscan"
)

// Container IDs and network names are arbitrary strings: label values must
// be escaped so that the textfile stays parseable.
func TestPrometheusEscapesLabels(t *testing.T) {
	r := &leakscan.Report{
		Time: time.Unix(1700000000, 0),
		Leaks: []leakscan.Leak{{
			HostLink: "veth0", Ifindex: 7, MAC: "aa:bb:cc:dd:ee:ff", Kind: "veth", NSID: 3,
			Owner: &leakscan.Owner{Network: `n"e\t`, ContainerID: "c\nd", IfName: "eth0", Kind: "record"},
		}},
		LeakedNetns: 1,
	}
	out := string(Prometheus(r))
	want := `leakguard_leaked_host_link{name="veth0",ifindex="7",kind="veth",mac="aa:bb:cc:dd:ee:ff",nsid="3",owner="n\"e\\t/c\nd/eth0",owner_kind="record",gss_proxy_armed="false"} 1` + "\n"
	if !strings.Contains(out, want) {
		t.Fatalf("escaped sample missing; want line\n%s\nin\n%s", want, out)
	}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if !strings.HasPrefix(line, "# ") && strings.Count(line, " ") != 1 && !strings.Contains(line, "{") {
			t.Errorf("malformed line %q", line)
		}
	}
	if strings.Contains(out, "leakguard_slab_leaked_netns_estimate ") {
		t.Error("slab estimate written although unavailable")
	}
}

func TestScanTable(t *testing.T) {
	var b bytes.Buffer
	r := &leakscan.Report{ReachableNetns: 4, Leaks: []leakscan.Leak{{HostLink: "veth0", Ifindex: 7, Kind: "veth", NSID: 3}}, LeakedNetns: 1,
		Slab: leakscan.SlabEstimate{Reason: "cannot read /proc/slabinfo"}}
	if err := ScanTable(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"HOST LINK", "veth0", "1 leaked network namespace(s) behind 1 host link(s)", "slab estimate: unavailable (cannot read /proc/slabinfo)"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, b.String())
		}
	}
}
