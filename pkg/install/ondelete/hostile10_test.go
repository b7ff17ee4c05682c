package ondelete_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/install/ondelete"
	"github.com/leakguard/leakguard/test/apifake"
)

// Only the API server's own NotFound for the DaemonSet asked about proves
// it gone. A 404 that is no API Status (a proxy in front of the API server,
// a misrouted path: client-go turns it into a NotFound error too) or a
// Status about another object keeps everything: a wrong "gone" removes
// leakguard from the node at every restart.
func TestDecideNotFoundMustBeTheDaemonSets(t *testing.T) {
	for name, ans := range map[string]apifake.Answer{
		"bare 404":                 apifake.BareNotFound,
		"404 about another object": apifake.NotFoundOther,
	} {
		t.Run(name, func(t *testing.T) {
			f := apifake.New(t)
			f.Set(func(f *apifake.Server) { f.DSAnswer = ans })
			v := ondelete.Decide(context.Background(), f.Config(t), 2*time.Second)
			if v.Uninstall {
				t.Fatalf("Decide = %+v: uninstall on a NotFound that is not the DaemonSet's", v)
			}
			if !strings.Contains(v.Reason, "DaemonSet") {
				t.Fatalf("Decide = %+v: the reason should name the DaemonSet read", v)
			}
		})
	}
}
