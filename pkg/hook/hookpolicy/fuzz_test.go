package hookpolicy

import (
	"encoding/json"
	"testing"
)

// FuzzParse: parsing never panics; a policy it accepts is valid and
// survives a JSON round trip unchanged. Seeds: testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parse("fuzz.json", b)
		if err != nil {
			if p != (Policy{}) {
				t.Fatalf("error %v with policy %+v", err, p)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted an invalid policy %+v: %v", p, err)
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parse("again.json", out)
		if err != nil || again != p {
			t.Fatalf("round trip %s: %+v, %v; want %+v", out, again, err, p)
		}
	})
}
