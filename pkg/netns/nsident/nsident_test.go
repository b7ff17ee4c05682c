package nsident_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/test/nsutil"
)

func TestClassify(t *testing.T) {
	pod := nsutil.NewNS(t)
	other := nsutil.NewNS(t)
	rec, err := nsident.OfPath(pod.Path())
	if err != nil {
		t.Fatalf("identity of pod netns: %v", err)
	}
	fromFd, err := nsident.OfFd(pod.Fd())
	if err != nil || fromFd != rec {
		t.Fatalf("OfFd = %v, %v; want %v", fromFd, err, rec)
	}
	host, err := nsident.Current()
	if err != nil {
		t.Fatalf("host identity: %v", err)
	}
	leftover := filepath.Join(t.TempDir(), "cni-leftover")
	if err := os.WriteFile(leftover, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, path string
		want       nsident.State
		reason     string
	}{
		{"same", pod.Path(), nsident.Alive, "is the recorded"},
		{"empty", "", nsident.Gone, "empty"},
		{"missing", filepath.Join(t.TempDir(), "nope"), nsident.Gone, "does not exist"},
		{"leftover file", leftover, nsident.Gone, "leftover"},
		{"other netns", other.Path(), nsident.Gone, "another namespace"},
		{"host netns", "/proc/self/ns/net", nsident.Gone, "another namespace"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := nsident.Classify(c.path, rec)
			if v.State != c.want || !strings.Contains(v.Reason, c.reason) {
				t.Fatalf("Classify(%q) = %v %q; want %v containing %q", c.path, v.State, v.Reason, c.want, c.reason)
			}
		})
	}
	if host == rec {
		t.Fatalf("pod netns identity equals host identity %v", host)
	}
}
