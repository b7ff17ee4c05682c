package install_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What sits in the conf dir may be hostile or broken: a FIFO is never
// waited on, a directory with a config name ignored; each is skipped and
// the next loadable file is the primary. A symlinked primary is not written
// through. (A huge file is not skipped: runtimes may load it, see
// TestHugeFirstConfigNotReportedInstalled.)
func TestHostileConfDirEntries(t *testing.T) {
	n := newNode(t)
	if err := unix.Mkfifo(filepath.Join(n.conf, "01-fifo.conflist"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(n.conf, "03-dir.conflist"), 0o755); err != nil {
		t.Fatal(err)
	}
	n.write("10-a.conflist", bridgeList)
	done := make(chan error, 1)
	in := n.installer(n.opts())
	go func() { done <- in.Reconcile() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a pass hung on the conf dir's FIFO")
	}
	if got := n.chain("10-a.conflist"); !reflect.DeepEqual(got, []string{"bridge", "portmap", "leakguard"}) {
		t.Fatalf("chain = %v", got)
	}
	logged := n.log.String()
	for _, f := range []string{"01-fifo.conflist"} {
		if !strings.Contains(logged, f) {
			t.Errorf("skipping %s not logged:\n%s", f, logged)
		}
	}

	m := newNode(t)
	target := filepath.Join(m.root, "elsewhere.conflist")
	if err := os.WriteFile(target, []byte(bridgeList), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(m.conf, "10-a.conflist")); err != nil {
		t.Fatal(err)
	}
	err := m.installer(m.opts()).Reconcile()
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("Reconcile = %v, want a refusal to write through the symlink", err)
	}
	if b, _ := os.ReadFile(target); string(b) != bridgeList {
		t.Fatal("symlink target edited")
	}
	if fi, err := os.Lstat(filepath.Join(m.conf, "10-a.conflist")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatal("symlink replaced")
	}
}

// A conf dir others can write to is refused: what is read there decides
// what runtimes run.
func TestConfDirOthersCanWriteRefused(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	if err := os.Chmod(n.conf, 0o777); err != nil {
		t.Fatal(err)
	}
	err := n.installer(n.opts()).Reconcile()
	if err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("Reconcile = %v", err)
	}
	if n.read("10-a.conflist") != bridgeList {
		t.Fatal("edited")
	}
}
