package install_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Binaries land 0755 with the source's content, the hook and the NRI plugin
// only when asked; a second pass leaves them alone; a new version replaces
// the file by rename, so a process still running the old one keeps its
// inode, whole.
func TestBinariesInstalledAtomically(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	opts := n.opts()
	in := n.installer(opts)
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(n.bin, "leakguard")
	fi, err := os.Stat(dst)
	if err != nil || fi.Mode().Perm() != 0o755 || !fi.Mode().IsRegular() {
		t.Fatalf("leakguard: %v, %v", fi, err)
	}
	if ents, _ := os.ReadDir(n.bin); len(ents) != 1 {
		t.Fatalf("bin dir holds %d files; the hook and NRI plugin go only where asked", len(ents))
	}
	first := ino(t, dst)
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if ino(t, dst) != first {
		t.Fatal("unchanged binary replaced")
	}

	old, err := os.Open(dst) // a runtime exec'ing the old version
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	n.writeFrom("leakguard", "#!/bin/sh\n# leakguard v2\n")
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "#!/bin/sh\n# leakguard v2\n" {
		t.Fatalf("new version not installed: %q", b)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(old); err != nil || b.String() != "#!/bin/sh\n# leakguard v1\n" {
		t.Fatalf("old inode changed under its reader: %q, %v", b.String(), err)
	}

	hookDir := filepath.Join(n.root, "libexec", "leakguard") // created: it is ours
	nriDir := filepath.Join(n.root, "nri")
	if err := os.Mkdir(nriDir, 0o755); err != nil {
		t.Fatal(err)
	}
	opts.HookDir, opts.NRIDir, opts.NRIName = hookDir, nriDir, "10-leakguard-nri"
	if err := n.installer(opts).Reconcile(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(hookDir, "leakguard-hook"), filepath.Join(nriDir, "10-leakguard-nri")} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v, %v", p, fi, err)
		}
	}
}

// A reader never sees a half-written binary: every read during repeated
// upgrades between two large versions gets one of them, whole.
func TestBinaryNeverHalfWritten(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	v1 := strings.Repeat("1", 4<<20)
	v2 := strings.Repeat("2", 4<<20)
	in := n.installer(n.opts())
	n.writeFrom("leakguard", v1)
	if err := in.Reconcile(); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(n.bin, "leakguard")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad []string
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(dst)
			if err != nil || (string(b) != v1 && string(b) != v2) {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%d bytes, err %v", len(b), err))
				mu.Unlock()
			}
		}
	}()
	for i := 0; i < 10; i++ {
		if i%2 == 0 {
			n.writeFrom("leakguard", v2)
		} else {
			n.writeFrom("leakguard", v1)
		}
		if err := in.Reconcile(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d reads saw a missing or partial binary: %v", len(bad), bad[0])
	}
}

// A missing source, or a CNI bin dir that does not exist, is an error and
// no config is touched: the entry never goes in before its binary.
func TestNoEntryWithoutItsBinary(t *testing.T) {
	n := newNode(t)
	n.write("10-a.conflist", bridgeList)
	if err := os.Remove(filepath.Join(n.from, "leakguard")); err != nil {
		t.Fatal(err)
	}
	in := n.installer(n.opts())
	if err := in.Reconcile(); err == nil {
		t.Fatal("installed without a binary")
	}
	if n.read("10-a.conflist") != bridgeList {
		t.Fatal("entry written before its binary")
	}
	n.writeFrom("leakguard", "#!/bin/sh\n")
	if err := os.Remove(n.bin); err != nil {
		t.Fatal(err)
	}
	if err := in.Reconcile(); err == nil || !strings.Contains(err.Error(), "does not exist yet") {
		t.Fatalf("Reconcile = %v, want to wait for the bin dir", err)
	}
	if n.read("10-a.conflist") != bridgeList {
		t.Fatal("entry written before its binary")
	}
	if _, err := os.Stat(n.bin); err == nil {
		t.Fatal("the runtime's bin dir was created by the installer")
	}
}
