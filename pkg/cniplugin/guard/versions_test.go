package guard_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// Every spec version: ADD prints prevResult unchanged in the config's
// version, CHECK passes, DEL with a live netns leaves the host side to the
// main plugin and forgets the record.
func TestEveryVersionAddCheckDel(t *testing.T) {
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			f := newFixture(t)
			out := f.add(v)

			want, err := f.prevResult().GetAsVersion(v)
			if err != nil {
				t.Fatal(err)
			}
			wantJSON, _ := json.Marshal(want)
			if !sameJSON(t, out, wantJSON) {
				t.Fatalf("ADD output differs from prevResult:\n got %s\nwant %s", out, wantJSON)
			}
			if got, err := version.NewResult(v, out); err != nil || got.Version() != v {
				t.Fatalf("ADD output is not a %s result: %v", v, err)
			}

			r := f.loadRecord()
			if r == nil || len(r.HostLinks) != 1 {
				t.Fatalf("record should hold one host link, got %+v", r)
			}
			h := r.HostLinks[0]
			if h.Name != f.hostVeth.Name || h.Index != f.hostVeth.Index || h.MAC != f.hostVeth.HardwareAddr.String() || h.Kind != "veth" || h.PeerIndex != f.contVeth.Index {
				t.Fatalf("recorded host link %+v does not match host veth %+v", h, f.hostVeth)
			}
			if len(r.IPs) != 1 || r.IPs[0] != "10.99.0.7/24" {
				t.Fatalf("recorded IPs %v", r.IPs)
			}

			if testutils.SpecVersionHasCHECK(v) {
				if err := f.check(v); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			var prev = f.prevResult()
			if !testutils.SpecVersionHasChaining(v) {
				prev = nil // below 0.4.0 DEL carries no prevResult
			}
			if err := f.del(f.podPath, v, prevOrNil(prev)); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			f.mustExist(f.hostVeth.Name, f.hostVeth.Index) // the main plugin's job
			if f.loadRecord() != nil {
				t.Fatal("record should be forgotten after DEL")
			}
		})
	}
}

func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("bad JSON %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("bad JSON %s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}
