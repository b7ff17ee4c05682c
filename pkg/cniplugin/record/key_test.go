package record_test

import (
	"strings"
	"testing"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
)

// Every key names a valid pin file, and distinct keys never share one.
func TestNameIsAValidPinName(t *testing.T) {
	keys := []record.Key{
		{Network: "net", ContainerID: "c1", IfName: "eth0"},
		{Network: "net_c1", ContainerID: "", IfName: "eth0"},
		{Network: "net", ContainerID: "c1_eth0"},
		{Network: ".", ContainerID: "../..", IfName: "a/b"},
		{Network: "net", ContainerID: strings.Repeat("x", 300), IfName: "eth0"},
	}
	seen := map[string]record.Key{}
	for _, k := range keys {
		n := k.Name()
		if err := nspin.ValidName(n); err != nil {
			t.Errorf("Name(%v) = %q: %v", k, n, err)
		}
		if prev, ok := seen[n]; ok {
			t.Errorf("Name(%v) = Name(%v) = %q", k, prev, n)
		}
		seen[n] = k
	}
}
