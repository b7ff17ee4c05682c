package hook

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinaryHostileImage: the built hook on an image whose config directory
// holds a sparse 1 GiB drop-in and a hard link to a "host" file of the same
// filesystem. Neither is read whole or edited: both are risks, the hook
// exits 0 in well under a second with a small RSS (the 1 GiB file used to
// take 14.8 s and 4.2 GB) even under failClosed, the host file and the big file are unchanged, and
// gssproxy.conf is still edited.
func TestBinaryHostileImage(t *testing.T) {
	need(t)
	b := newBundle(t)
	b.write(t, "etc/gssproxy/gssproxy.conf", []byte(nfsOn))
	big := filepath.Join(b.rootfs, "etc/gssproxy/24-nfs-server.conf")
	b.write(t, "etc/gssproxy/24-nfs-server.conf", []byte(nfsOn))
	if err := os.Truncate(big, 1<<30); err != nil {
		t.Fatal(err)
	}
	host := filepath.Join(b.dir, "host-file.conf") // outside the rootfs, same filesystem
	if err := os.WriteFile(host, []byte(nfsOn), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(host, filepath.Join(b.rootfs, "etc/gssproxy/50-linked.conf")); err != nil {
		t.Fatal(err)
	}
	b.writeSpec(t, privilegedSpec())

	r := runHook(t, stateFor("ctr-hostile", b.dir), "--config", writePolicy(t, `{"failClosed":true}`))
	t.Logf("hook on a 1 GiB config and a hard link: %v, max RSS %.1f MiB", r.elapsed, float64(r.maxRSS)/(1<<20))
	m := logLine(t, r.stderr)
	risks := fmt.Sprint(m["risks"])
	if r.code != 0 || m["decision"] != "risk" || !strings.Contains(risks, "24-nfs-server.conf is 1073741824 bytes or more") ||
		!strings.Contains(risks, "50-linked.conf has kernel_nfsd on and 2 hard links") ||
		fmt.Sprint(m["files_changed"]) != "[/etc/gssproxy/gssproxy.conf]" {
		t.Fatalf("exit %d, log %s", r.code, r.stderr)
	}
	// ru_maxrss also counts the test process's pages shared with the child
	// before its exec (tens of MiB under -race); reading the file would add
	// a GiB.
	if r.elapsed > 2e9 || r.maxRSS > 256<<20 {
		t.Fatalf("hook took %v and %d bytes of RSS", r.elapsed, r.maxRSS)
	}
	if c, _ := os.ReadFile(host); string(c) != nfsOn {
		t.Fatalf("host file changed through its hard link: %q", c)
	}
	if fi, err := os.Stat(big); err != nil || fi.Size() != 1<<30 {
		t.Fatalf("big file: %v, %v", fi, err)
	}
	if strings.Contains(b.read(t, "etc/gssproxy/gssproxy.conf"), "kernel_nfsd = yes") {
		t.Fatal("gssproxy.conf not edited")
	}
}
