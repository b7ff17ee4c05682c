package record

import (
	"strings"
	"testing"

	"github.com/leakguard/leakguard/pkg/netns/nspin"
)

// Seed corpora live in testdata/fuzz/FuzzKeyName and
// testdata/fuzz/FuzzKeyNameInjective; plain `go test` runs them.

// Every key names one safe path component: a valid pin name (so never "."
// or "..", no '/'), within the headroom Name promises for suffixes, and the
// same name every time.
func FuzzKeyName(f *testing.F) {
	f.Fuzz(func(t *testing.T, network, containerID, ifName string) {
		k := Key{Network: network, ContainerID: containerID, IfName: ifName}
		n := k.Name()
		if err := nspin.ValidName(n); err != nil {
			t.Fatalf("Name(%q) = %q: %v", k, n, err)
		}
		if n == "." || n == ".." || strings.ContainsRune(n, '/') || strings.ContainsRune(n, 0) {
			t.Fatalf("Name(%q) = %q is not a single path component", k, n)
		}
		if len(n) > maxName {
			t.Fatalf("Name(%q) is %d bytes, more than the %d that leave room for suffixes", k, len(n), maxName)
		}
		if again := k.Name(); again != n {
			t.Fatalf("Name(%q) is not deterministic: %q then %q", k, n, again)
		}
	})
}

// Distinct keys never share a name. Besides the two keys the fuzzer picks,
// each is compared with the keys made by moving a few bytes across a field
// boundary, where a separator or hash-input ambiguity would show.
func FuzzKeyNameInjective(f *testing.F) {
	f.Fuzz(func(t *testing.T, n1, c1, i1, n2, c2, i2 string) {
		a := Key{Network: n1, ContainerID: c1, IfName: i1}
		b := Key{Network: n2, ContainerID: c2, IfName: i2}
		keys := append([]Key{a, b}, shifts(a)...)
		keys = append(keys, shifts(b)...)
		seen := make(map[string]Key, len(keys))
		for _, k := range keys {
			n := k.Name()
			if prev, ok := seen[n]; ok && prev != k {
				t.Fatalf("keys %q and %q share the name %q", prev, k, n)
			}
			seen[n] = k
		}
	})
}

// shifts returns k with up to 3 bytes moved across each field boundary, in
// both directions.
func shifts(k Key) []Key {
	var out []Key
	for m := 1; m <= 3; m++ {
		if len(k.Network) >= m { // tail of Network to the head of ContainerID
			cut := len(k.Network) - m
			out = append(out, Key{k.Network[:cut], k.Network[cut:] + k.ContainerID, k.IfName})
		}
		if len(k.ContainerID) >= m {
			out = append(out, Key{k.Network + k.ContainerID[:m], k.ContainerID[m:], k.IfName})
			cut := len(k.ContainerID) - m
			out = append(out, Key{k.Network, k.ContainerID[:cut], k.ContainerID[cut:] + k.IfName})
		}
		if len(k.IfName) >= m {
			out = append(out, Key{k.Network, k.ContainerID + k.IfName[:m], k.IfName[m:]})
		}
	}
	return out
}
