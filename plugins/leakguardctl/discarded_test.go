package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/test/nsutil"
)

// discardedJSON is one entry of the documented "discarded" list.
type discardedJSON struct {
	Kind    string `json:"kind"`
	Path    string `json:"path"`
	Reason  string `json:"reason"`
	Action  string `json:"action"`
	MovedTo string `json:"movedTo"`
}

// badStateDir is a state dir with one usable record and one unusable file
// of each kind; it returns the dir and the kind expected for each path.
func badStateDir(t *testing.T) (string, map[string]string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	save := func(cid string) string {
		r := &record.Record{Key: record.Key{Network: "lgnet", ContainerID: cid, IfName: "eth0"}, Netns: nsident.Identity{Dev: 4, Ino: 4026530000}}
		if err := st.Save(r); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(dir, r.Key.Name()+".json")
	}
	save("ctr-good")
	want := map[string]string{}

	corrupt := save("ctr-corrupt")
	if err := os.WriteFile(corrupt, []byte(`{"schema":1,"network":`), 0o600); err != nil {
		t.Fatal(err)
	}
	want[corrupt] = "corrupt"

	otherBoot := save("ctr-other-boot")
	b, err := os.ReadFile(otherBoot)
	if err != nil {
		t.Fatal(err)
	}
	b = []byte(strings.Replace(string(b), st.BootID(), "00000000-0000-0000-0000-000000000000", 1))
	if err := os.WriteFile(otherBoot, b, 0o600); err != nil {
		t.Fatal(err)
	}
	want[otherBoot] = "other-boot"

	fifo := filepath.Join(dir, "lgnet_ctr-fifo_eth0.json")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	want[fifo] = "not-regular-file"
	link := filepath.Join(dir, "lgnet_ctr-link_eth0.json")
	if err := os.Symlink(filepath.Join(dir, "lgnet_ctr-good_eth0.json"), link); err != nil {
		t.Fatal(err)
	}
	want[link] = "not-regular-file"

	if err := os.Mkdir(filepath.Join(dir, "tombstones"), 0o700); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "tombstones", "00000000000000000001-lgnet_ctr-huge_eth0.tomb")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil { // sparse: cheap to make, costly to read
		t.Fatal(err)
	}
	f.Close()
	want[huge] = "too-large"
	return dir, want
}

func checkDiscarded(t *testing.T, what string, got []discardedJSON, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: discarded = %+v; want %v", what, got, want)
	}
	for _, d := range got {
		if want[d.Path] != d.Kind || d.Action != "left" || d.MovedTo != "" || d.Reason == "" {
			t.Errorf("%s: discarded %+v; want kind %q, left in place, with a reason", what, d, want[d.Path])
		}
	}
	for p := range want {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s: a read-only command changed %s: %v", what, p, err)
		}
	}
}

// `records` and `scan` report every unusable state file with its kind and
// path (table and JSON), and change none of them.
func TestRecordsAndScanReportEveryDiscardedFile(t *testing.T) {
	n := &node{t: t, ns: nsutil.NewNS(t)}
	dir, want := badStateDir(t)

	out, code := n.run("records", "--json", "--state-dir", dir, "--pin-dir", "")
	var recs struct {
		Entries []struct {
			ContainerID string `json:"containerID"`
		} `json:"entries"`
		Discarded []discardedJSON `json:"discarded"`
	}
	if err := json.Unmarshal([]byte(out), &recs); code != 0 || err != nil {
		t.Fatalf("records --json: exit %d, %v\n%s", code, err, out)
	}
	if len(recs.Entries) != 1 || recs.Entries[0].ContainerID != "ctr-good" {
		t.Errorf("records entries = %+v; want ctr-good only", recs.Entries)
	}
	checkDiscarded(t, "records --json", recs.Discarded, want)

	out, code = n.run("scan", "--json", "--state-dir", dir)
	var rep struct {
		Discarded []discardedJSON `json:"discarded"`
	}
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil {
		t.Fatalf("scan --json: exit %d, %v\n%s", code, err, out)
	}
	checkDiscarded(t, "scan --json", rep.Discarded, want)

	for _, cmd := range []string{"records", "scan"} {
		table, code := n.run(cmd, "--state-dir", dir)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s", cmd, code, table)
		}
		for p, kind := range want {
			if !strings.Contains(table, "discarded ("+kind+"): "+p+":") {
				t.Errorf("%s table does not report %s as %s:\n%s", cmd, p, kind, table)
			}
		}
	}
}

// A state dir that is a symlink (even a dangling one) or belongs to another
// user is refused, never taken for "nothing recorded" nor followed.
func TestUntrustedStateDirIsRefused(t *testing.T) {
	n := &node{t: t, ns: nsutil.NewNS(t)}
	dir, _ := badStateDir(t)
	base := t.TempDir()
	link, dangling, foreign := filepath.Join(base, "link"), filepath.Join(base, "dangling"), filepath.Join(base, "foreign")
	for _, err := range []error{
		os.Symlink(dir, link), os.Symlink(filepath.Join(base, "none"), dangling),
		os.Mkdir(foreign, 0o700), os.Chown(foreign, 65534, 65534),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{link, dangling, foreign} {
		for _, cmd := range []string{"records", "scan"} {
			if out, code := n.run(cmd, "--state-dir", d); code != 1 {
				t.Errorf("%s --state-dir %s: exit %d, want 1\n%s", cmd, d, code, out)
			}
		}
	}
}

// reap opens the state dir writable: it removes another boot's file, moves
// every other unusable one aside, and reports each (JSON and table).
func TestReapReportsWhatItDiscards(t *testing.T) {
	n := &node{t: t, ns: nsutil.NewNS(t)}
	dir, want := badStateDir(t)
	out, code := n.run("reap", "--json", "--state-dir", dir, "--recheck", "0")
	var rep struct {
		Discarded []discardedJSON `json:"discarded"`
	}
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil {
		t.Fatalf("reap --json: exit %d, %v\n%s", code, err, out)
	}
	if len(rep.Discarded) != len(want) {
		t.Errorf("reap discarded %+v; want %v", rep.Discarded, want)
	}
	for _, d := range rep.Discarded {
		action := "moved-aside"
		if d.Kind == "other-boot" {
			action = "removed"
		}
		if want[d.Path] != d.Kind || d.Action != action || (action == "moved-aside") != (d.MovedTo != "") {
			t.Errorf("reap discarded %+v; want kind %q, %s", d, want[d.Path], action)
		}
		if _, err := os.Lstat(d.Path); !os.IsNotExist(err) {
			t.Errorf("%s still in place after reap: %v", d.Path, err)
		}
	}
	dir, want = badStateDir(t)
	table, code := n.run("reap", "--state-dir", dir, "--recheck", "0")
	if code != 0 {
		t.Fatalf("reap: exit %d\n%s", code, table)
	}
	for p, kind := range want {
		if !strings.Contains(table, "discarded ("+kind+"): "+p+":") {
			t.Errorf("reap table does not report %s as %s:\n%s", p, kind, table)
		}
	}
}
