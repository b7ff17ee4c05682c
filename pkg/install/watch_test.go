package install_test

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/install"
)

func holds(n *node, name string) bool {
	b, err := os.ReadFile(filepath.Join(n.conf, name))
	return err == nil && strings.Contains(string(b), `"type": "leakguard"`)
}

// A primary agent rewriting its file without leakguard, by rename and in
// place, gets the entry back within a second, every time; each is counted
// as a re-insertion.
func TestWatchReinsertsAfterTheAgentRewrites(t *testing.T) {
	for _, how := range []string{"rename", "in-place"} {
		t.Run(how, func(t *testing.T) {
			n := newNode(t)
			n.write("10-a.conflist", bridgeList)
			opts := n.opts()
			opts.RevertBurst = 1000 // measured here, limited in the next test
			in := n.installer(opts)
			watch(t, in)
			waitFor(t, "first insertion", 5*time.Second, func() bool { return in.Status().Installed })
			const rounds = 20
			var lat []time.Duration
			for i := 0; i < rounds; i++ {
				content := strings.Replace(bridgeList, "cni0", "cni"+string(rune('a'+i)), 1)
				if how == "rename" {
					n.rewriteByRename("10-a.conflist", content)
				} else {
					n.rewriteInPlace("10-a.conflist", content)
				}
				lat = append(lat, waitFor(t, "re-insertion", time.Second, func() bool { return holds(n, "10-a.conflist") }))
				if got := n.chain("10-a.conflist"); !reflect.DeepEqual(got, []string{"bridge", "portmap", "leakguard"}) {
					t.Fatalf("round %d: chain = %v", i, got)
				}
				if !strings.Contains(n.read("10-a.conflist"), `"cni`+string(rune('a'+i))+`"`) {
					t.Fatalf("round %d: the agent's new content was not kept", i)
				}
			}
			waitFor(t, "all re-insertions counted", time.Second, func() bool { return in.Status().Reinsertions == rounds })
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			t.Logf("re-insertion latency (%s, %d rounds): median %v, p95 %v, max %v", how, rounds, lat[rounds/2], lat[rounds*95/100], lat[rounds-1])
		})
	}
}

// Something that keeps reverting the file gets re-insertions at the limit's
// pace only, and a warning naming the file.
func TestWatchRateLimitsAFileThatKeepsReverting(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	opts := n.opts()
	opts.RevertBurst, opts.RevertInterval = 3, 300*time.Millisecond
	in := n.installer(opts)
	watch(t, in)
	waitFor(t, "first insertion", 5*time.Second, func() bool { return in.Status().Installed })

	start := time.Now()
	const fight = 2 * time.Second
	for time.Since(start) < fight {
		if holds(n, "10-a.conflist") {
			n.rewriteByRename("10-a.conflist", bridgeList)
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	got := in.Status().Reinsertions
	most := uint64(3 + elapsed/(300*time.Millisecond) + 1)
	if got < 3 || got > most {
		t.Fatalf("%d re-insertions in %v; the limit allows 3 at once then one per 300ms (at most %d)", got, elapsed, most)
	}
	warn := n.log.records("keeps losing leakguard's entry")
	if len(warn) == 0 || warn[0]["file"] != "10-a.conflist" || warn[0]["level"] != "WARN" {
		t.Fatalf("no warning naming the file: %v\n%s", warn, n.log)
	}
	// Once the agent stops, the entry comes back at the limit's pace.
	waitFor(t, "re-insertion after the fight", 2*time.Second, func() bool { return holds(n, "10-a.conflist") })
	t.Logf("%d re-insertions in %v of fighting", got, elapsed)
}

// A primary rewritten into something no runtime can load is left alone (not
// replaced, no other network's file edited), logged and reported; the next
// valid rewrite gets the entry.
func TestWatchLeavesAnUnparsablePrimaryAlone(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	other := strings.Replace(bridgeList, "podnet", "other", 1)
	n.write("20-b.conflist", other)
	in := n.installer(n.opts())
	watch(t, in)
	waitFor(t, "first insertion", 5*time.Second, func() bool { return in.Status().Installed })

	const broken = `{"cniVersion": "1.0.0", "name": "podnet", "plugins": [{"type": "bridge"`
	n.rewriteByRename("10-a.conflist", broken)
	waitFor(t, "the parse error in status", 2*time.Second, func() bool {
		return strings.Contains(in.Status().Err, "10-a.conflist cannot be loaded")
	})
	time.Sleep(200 * time.Millisecond)
	if n.read("10-a.conflist") != broken {
		t.Fatal("unparsable primary was rewritten")
	}
	if n.read("20-b.conflist") != other {
		t.Fatal("another network's file was edited instead")
	}
	if in.Status().Installed {
		t.Fatal("installed with an unparsable primary")
	}
	if len(n.log.records("not installed")) == 0 {
		t.Fatalf("not logged:\n%s", n.log)
	}
	n.rewriteByRename("10-a.conflist", bridgeList)
	waitFor(t, "re-insertion after a valid rewrite", time.Second, func() bool { return holds(n, "10-a.conflist") })
	waitFor(t, "installed", time.Second, func() bool { return in.Status().Installed })
}

// An agent that writes its .conf again (it shadows our .conflist) gets it
// converted again: the .conf goes, the .conflist holds its new content.
func TestWatchConvertsARewrittenConf(t *testing.T) {
	n := newNode(t)
	n.write("10-ptp.conf", ptpConf)
	in := n.installer(n.opts())
	watch(t, in)
	waitFor(t, "conversion", 5*time.Second, func() bool { return holds(n, "10-ptp.conflist") && !n.exists("10-ptp.conf") })
	n.rewriteByRename("10-ptp.conf", strings.Replace(ptpConf, "1460", "1400", 1))
	waitFor(t, "second conversion", time.Second, func() bool {
		return !n.exists("10-ptp.conf") && strings.Contains(n.read("10-ptp.conflist"), "1400")
	})
	if file, chain := n.runtimeChain(); file != "10-ptp.conflist" || chain != "ptp,leakguard" {
		t.Fatalf("runtime loads %s: %s", file, chain)
	}
	if got := in.Status().Reinsertions; got != 1 {
		t.Errorf("reinsertions = %d, want 1", got)
	}
}

// A conf dir replaced by someone else (the watch on the old one is lost) is
// watched again, and its primary gets the entry.
func TestWatchRearmsOnAReplacedDir(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	opts := n.opts()
	opts.Resync = time.Hour // only the watch can notice
	in := n.installer(opts)
	watch(t, in)
	waitFor(t, "first insertion", 5*time.Second, func() bool { return in.Status().Installed })
	if err := os.RemoveAll(n.conf); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the dir's loss in status", 3*time.Second, func() bool { return !in.Status().Installed })
	staging := filepath.Join(n.root, "staging")
	if err := os.Mkdir(staging, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(staging, "10-a.conflist"), []byte(bridgeList), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(staging, n.conf); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "insertion into the new dir", 5*time.Second, func() bool { return holds(n, "10-a.conflist") })
	// And the new dir is watched.
	n.rewriteByRename("10-a.conflist", bridgeList)
	waitFor(t, "re-insertion", time.Second, func() bool { return holds(n, "10-a.conflist") })
}

// A removed or replaced binary is put back; a write of our own does not
// wake the installer into writing again, and while nothing changes nothing
// is written.
func TestWatchRestoresTheBinaryAndIdles(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	opts := n.opts()
	opts.Resync = 50 * time.Millisecond
	in := n.installer(opts)
	watch(t, in)
	waitFor(t, "first insertion", 5*time.Second, func() bool { return in.Status().Installed })
	bin := filepath.Join(n.bin, "leakguard")
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "binary restored", time.Second, func() bool { _, err := os.Stat(bin); return err == nil })
	if err := os.WriteFile(bin, []byte("truncated"), 0o755); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "binary repaired", time.Second, func() bool {
		b, _ := os.ReadFile(bin)
		return string(b) == "#!/bin/sh\n# leakguard v1\n"
	})
	writes := in.Status().Writes
	confIno, binIno := ino(t, filepath.Join(n.conf, "10-a.conflist")), ino(t, bin)
	time.Sleep(time.Second) // 20 backstop passes
	if got := in.Status().Writes; got != writes {
		t.Errorf("%d config writes while nothing changed", got-writes)
	}
	if ino(t, filepath.Join(n.conf, "10-a.conflist")) != confIno || ino(t, bin) != binIno {
		t.Error("files replaced while nothing changed")
	}
}

// --own-file: the primary is never edited; leakguard's own copy (sorting
// first) holds it plus leakguard and follows its changes.
func TestOwnFileFollowsThePrimary(t *testing.T) {
	n := newNode(t)
	n.write("10-aws.conflist", bridgeList)
	opts := n.opts()
	opts.OwnFile = install.DefaultOwnFile
	in := n.installer(opts)
	watch(t, in)
	waitFor(t, "own file", 5*time.Second, func() bool { return in.Status().Installed })
	if n.read("10-aws.conflist") != bridgeList {
		t.Fatal("primary edited in own-file mode")
	}
	if file, chain := n.runtimeChain(); file != install.DefaultOwnFile || chain != "bridge,portmap,leakguard" {
		t.Fatalf("runtime loads %s: %s", file, chain)
	}
	changed := strings.Replace(bridgeList, "cni0", "cni9", 1)
	n.rewriteByRename("10-aws.conflist", changed)
	waitFor(t, "own file in sync", time.Second, func() bool { return strings.Contains(n.read(install.DefaultOwnFile), "cni9") })
	if n.read("10-aws.conflist") != changed {
		t.Fatal("primary edited in own-file mode")
	}
	if st := in.Status(); st.Reinsertions != 0 || st.File != install.DefaultOwnFile || st.Primary != "10-aws.conflist" {
		t.Errorf("status = %+v", st)
	}
	// Someone else editing our file is a revert.
	n.rewriteByRename(install.DefaultOwnFile, bridgeList)
	waitFor(t, "own file restored", time.Second, func() bool { return holds(n, install.DefaultOwnFile) })
	waitFor(t, "counted", time.Second, func() bool { return in.Status().Reinsertions == 1 })
}

// An own file that would sort after the primary is refused: runtimes would
// not load it.
func TestOwnFileMustSortFirst(t *testing.T) {
	n := newNode(t)
	n.write("00-calico.conflist", bridgeList)
	opts := n.opts()
	opts.OwnFile = "50-leakguard.conflist"
	in := n.installer(opts)
	err := in.Reconcile()
	if err == nil || !strings.Contains(err.Error(), "sorts after the primary 00-calico.conflist") {
		t.Fatalf("Reconcile = %v", err)
	}
	if n.exists(opts.OwnFile) || in.Status().Installed {
		t.Fatal("own file written although runtimes would not load it")
	}
}

// Passes are serialised: Reconcile from several goroutines while an agent
// rewrites the file never duplicates the entry.
func TestConcurrentPassesNeverDuplicate(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	opts := n.opts()
	opts.RevertBurst = 1 << 20
	in := n.installer(opts)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				_ = in.Reconcile()
			}
		}()
	}
	for i := 0; i < 30; i++ {
		n.rewriteByRename("10-a.conflist", bridgeList)
	}
	wg.Wait()
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := n.chain("10-a.conflist"); !reflect.DeepEqual(got, []string{"bridge", "portmap", "leakguard"}) {
		t.Fatalf("chain = %v", got)
	}
}
