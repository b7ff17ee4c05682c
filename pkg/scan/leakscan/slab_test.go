package leakscan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leakguard/leakguard/pkg/netns/nsreach"
)

const slabHeader = "slabinfo - version: 2.1\n" +
	"# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n"

func writeSlab(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "slabinfo")
	if err := os.WriteFile(p, []byte(slabHeader+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEstimateSlab(t *testing.T) {
	reach := nsreach.Set{
		{Dev: 4, Ino: initNetIno}: {},
		{Dev: 4, Ino: 4026532300}: {},
		{Dev: 4, Ino: 4026532301}: {},
	}
	p := writeSlab(t, "net_namespace         12     63   4288    7    8 : tunables    0    0    0 : slabdata      9      9      0\n")
	e := estimateSlab(p, reach)
	// init_net is static: 2 of the 3 reachable namespaces are slab objects.
	if !e.Available || e.ActiveObjects != 12 || e.ReachableObjects != 2 || e.Leaked != 10 || e.LeakedLowerBound > e.Leaked {
		t.Fatalf("estimate = %+v; want 12 active - 2 reachable = 10", e)
	}

	merged := estimateSlab(writeSlab(t, "kmalloc-8k  10 12 8192 4 8 : tunables 0 0 0 : slabdata 3 3 0\n"), reach)
	if merged.Available || !strings.Contains(merged.Reason, "slab merging") {
		t.Fatalf("without a net_namespace line: %+v; want unavailable because of slab merging", merged)
	}
	missing := estimateSlab(filepath.Join(t.TempDir(), "nope"), reach)
	if missing.Available || !strings.Contains(missing.Reason, "cannot read") {
		t.Fatalf("unreadable slabinfo: %+v", missing)
	}
}
