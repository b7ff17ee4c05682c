package protect

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/hook/gssconf"
)

// TestOversizedConfig: a config over gssconf.MaxFileSize is a risk, left
// unread and untouched, and costs no time even when it is a sparse 4 GiB
// file; the other configs are still edited. A config of exactly the limit
// is edited.
func TestOversizedConfig(t *testing.T) {
	for name, size := range map[string]int64{"one byte over": gssconf.MaxFileSize + 1, "sparse 4 GiB": 4 << 30} {
		t.Run(name, func(t *testing.T) {
			c := newContainer(t)
			c.write(t, "etc/gssproxy/gssproxy.conf", on)
			big := filepath.Join(c.rootfs, "etc/gssproxy/24-nfs-server.conf")
			c.write(t, "etc/gssproxy/24-nfs-server.conf", on)
			must(t, os.Truncate(big, size))
			start := time.Now()
			r := c.run(t, privileged)
			if d := time.Since(start); d > time.Second {
				t.Errorf("hook took %v on a %d-byte config", d, size)
			}
			if r.Err != nil || r.Decision != Risk || len(r.Risks) != 1 || !strings.Contains(r.Risks[0], "24-nfs-server.conf is") ||
				len(r.Changed) != 1 || r.Changed[0] != "/etc/gssproxy/gssproxy.conf" {
				t.Fatalf("got %+v", r)
			}
			var st unix.Stat_t
			must(t, unix.Stat(big, &st))
			b := make([]byte, len(on))
			f, err := os.Open(big)
			must(t, err)
			defer f.Close()
			if _, err := f.Read(b); err != nil || string(b) != on || st.Size != size {
				t.Fatalf("oversized config changed: size %d, starts %q", st.Size, b)
			}
		})
	}
	t.Run("at the limit", func(t *testing.T) {
		c := newContainer(t)
		c.write(t, "etc/gssproxy/gssproxy.conf", on+strings.Repeat("#", gssconf.MaxFileSize-len(on)))
		if r := c.run(t, privileged); r.Err != nil || r.Decision != Edited {
			t.Fatalf("got %+v", r)
		}
	})
}

// TestTooManyDropIns: only the first gssconf.MaxDropIns drop-ins in
// gssproxy's order are read; the rest are reported as one risk.
func TestTooManyDropIns(t *testing.T) {
	c := newContainer(t)
	n := gssconf.MaxDropIns + 6
	for i := 0; i < n; i++ {
		c.write(t, fmt.Sprintf("etc/gssproxy/50-%03d.conf", i), on)
	}
	r := c.run(t, privileged)
	if r.Err != nil || r.Decision != Risk || len(r.Risks) != 1 || len(r.Changed) != gssconf.MaxDropIns ||
		!strings.Contains(r.Risks[0], fmt.Sprintf("has %d drop-ins, over the limit of %d: 6 not checked, from 50-%03d.conf on", n, gssconf.MaxDropIns, gssconf.MaxDropIns)) {
		t.Fatalf("got %+v", r)
	}
	for i := 0; i < n; i++ {
		if got := enabled(c.read(t, fmt.Sprintf("etc/gssproxy/50-%03d.conf", i))); got != (i >= gssconf.MaxDropIns) {
			t.Errorf("drop-in %d: kernel_nfsd on = %v", i, got)
		}
	}
}

// TestTooManyDirEntries: a config directory with more than
// gssconf.MaxDirEntries names is listed no further; that is a risk, and
// gssproxy.conf, which needs no listing, is still edited.
func TestTooManyDirEntries(t *testing.T) {
	c := newContainer(t)
	for i := 0; i < gssconf.MaxDirEntries+10; i++ {
		c.write(t, fmt.Sprintf("etc/gssproxy/junk-%d", i), "")
	}
	c.write(t, "etc/gssproxy/gssproxy.conf", on)
	r := c.run(t, privileged)
	if r.Err != nil || r.Decision != Risk || len(r.Risks) != 1 || !strings.Contains(r.Risks[0], "more than 4096 entries") ||
		enabled(c.read(t, "etc/gssproxy/gssproxy.conf")) {
		t.Fatalf("got %+v", r)
	}
}

// TestEditInPlaceEveryTrueSpelling: for every spelling gssproxy reads as true
// (each ASCII case of 1, on, true, yes), the edit keeps the file's length and
// inode, changes only the value's bytes, and leaves a value gssproxy reads as
// false.
func TestEditInPlaceEveryTrueSpelling(t *testing.T) {
	var spellings []string // 1, on, yes, true in every ASCII case: 1+4+8+16
	for _, w := range []string{"1", "on", "yes", "true"} {
		for mask := 0; mask < 1<<len(w); mask++ {
			b := []byte(w)
			for i := range b {
				if mask&(1<<i) != 0 && b[i] >= 'a' {
					b[i] -= 'a' - 'A'
				}
			}
			if !slices.Contains(spellings, string(b)) {
				spellings = append(spellings, string(b))
			}
		}
	}
	if len(spellings) != 29 {
		t.Fatalf("%d spellings: %q", len(spellings), spellings)
	}
	for _, v := range spellings {
		for _, sp := range []string{" = ", "=", "\t=\t", " =  "} {
			c := newContainer(t)
			in := "[service/nfs-server]\n  mechs = krb5\n  kernel_nfsd" + sp + v + "\n  euid = 0\n"
			p := filepath.Join(c.rootfs, "etc/gssproxy/gssproxy.conf")
			c.write(t, "etc/gssproxy/gssproxy.conf", in)
			var before, after unix.Stat_t
			must(t, unix.Stat(p, &before))
			r := c.run(t, privileged)
			must(t, unix.Stat(p, &after))
			out := c.read(t, "etc/gssproxy/gssproxy.conf")
			if r.Decision != Edited || r.Settings != 1 || after.Ino != before.Ino || after.Size != before.Size || len(out) != len(in) {
				t.Fatalf("%q: %+v, inode %d -> %d, size %d -> %d", in, r, before.Ino, after.Ino, before.Size, after.Size)
			}
			at := strings.Index(in, sp+v) + len(sp)
			for i := range in {
				if in[i] != out[i] && (i < at || i >= at+len(v)) {
					t.Fatalf("%q -> %q: byte %d outside the value changed", in, out, i)
				}
			}
			if gssconf.IsTrue(out[at : at+len(v)]) {
				t.Fatalf("%q -> %q: still true", in, out)
			}
		}
	}
}

// TestHardLinkedConfig: a config with another hard link, which may be a
// host file on the same filesystem, is a risk and never edited; a
// hard-linked config that is already off is simply clean.
func TestHardLinkedConfig(t *testing.T) {
	_, hostFile := hostConfig(t)
	c := newContainer(t)
	c.write(t, "etc/gssproxy/gssproxy.conf", on)
	must(t, os.Link(hostFile, filepath.Join(c.rootfs, "etc/gssproxy/24-nfs-server.conf")))
	r := c.run(t, privileged)
	if r.Err != nil || r.Decision != Risk || len(r.Risks) != 1 ||
		!strings.Contains(r.Risks[0], "24-nfs-server.conf has kernel_nfsd on and 2 hard links") ||
		len(r.Changed) != 1 || r.Changed[0] != "/etc/gssproxy/gssproxy.conf" {
		t.Fatalf("got %+v", r)
	}
	untouched(t, hostFile)

	c2 := newContainer(t)
	offFile := filepath.Join(t.TempDir(), "off.conf")
	must(t, os.WriteFile(offFile, []byte(off), 0o644))
	must(t, os.Link(offFile, filepath.Join(c2.rootfs, "etc/gssproxy/gssproxy.conf")))
	if r := c2.run(t, privileged); r.Err != nil || r.Decision != Clean {
		t.Fatalf("hard-linked config already off: %+v", r)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
