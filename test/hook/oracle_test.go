package hook

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"
	"unicode/utf16"
)

// gssproxyBin is Debian's gssproxy, used as an oracle of its own config
// semantics; it is never started as a service.
const gssproxyBin = "/usr/sbin/gssproxy"

// oracleScript runs in a private mount namespace: /run becomes a tmpfs (pid
// file and service sockets stay off the host), a temp dir is bind-mounted
// over /proc/<own pid>/net so /proc/net/rpc/use-gss-proxy is a plain file,
// and the same pid then becomes gssproxy, in the foreground.
const oracleScript = `mount -t tmpfs leakguard-oracle /run && mount --bind "$1" /proc/$$/net && exec "$2" -i -c "$3/gssproxy.conf" -C "$3" -s "$4"`

// settle is how long gssproxy gets after creating its socket: it writes the
// proc file right after listening, on the same thread.
const settle = 1500 * time.Millisecond

type observation struct {
	wrote string        // what gssproxy wrote to use-gss-proxy ("" for nothing)
	after time.Duration // since start, when written or when given up
}

// askGssproxy runs gssproxy on confDir and reports what it wrote to its
// (fake) /proc/net/rpc/use-gss-proxy.
func askGssproxy(t *testing.T, confDir string) observation {
	t.Helper()
	tmp := t.TempDir()
	netDir := filepath.Join(tmp, "net")
	flag := filepath.Join(netDir, "rpc", "use-gss-proxy")
	sock := filepath.Join(tmp, "gssproxy.sock")
	if err := os.MkdirAll(filepath.Dir(flag), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private",
		"sh", "-c", oracleScript, "sh", netDir, gssproxyBin, confDir, sock)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to start gssproxy: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()

	var ready time.Time
	for time.Since(start) < 10*time.Second {
		if b, _ := os.ReadFile(flag); len(b) > 0 {
			return observation{wrote: string(b), after: time.Since(start)}
		}
		if ready.IsZero() {
			if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
				ready = time.Now()
			}
		} else if time.Since(ready) > settle {
			return observation{after: time.Since(start)}
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("gssproxy exited early (%v): %s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("gssproxy neither wrote the flag nor created %s within 10s: %s", sock, out.String())
	return observation{}
}

// debianFiles are the Debian gssproxy package's config files.
func debianFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, name := range []string{"gssproxy.conf", "24-nfs-server.conf"} {
		b, err := os.ReadFile(filepath.Join("/etc/gssproxy", name))
		if err != nil {
			t.Fatalf("Debian's gssproxy config missing (apt-get install gssproxy): %v", err)
		}
		files[name] = b
	}
	if !bytes.Contains(files["24-nfs-server.conf"], []byte("kernel_nfsd = yes")) {
		t.Fatalf("/etc/gssproxy/24-nfs-server.conf does not turn kernel_nfsd on:\n%s", files["24-nfs-server.conf"])
	}
	return files
}

func crlfBOM(b []byte) []byte {
	return append([]byte("\ufeff"), bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))...)
}

func utf16LE(b []byte) []byte {
	out := []byte{0xFF, 0xFE}
	for _, u := range utf16.Encode([]rune(string(b))) {
		out = append(out, byte(u), byte(u>>8))
	}
	return out
}

// TestOracle runs the real gssproxy on configs before and after the hook:
// before, it writes 1 exactly when gssproxy's own rules say kernel_nfsd is
// on; after the hook, it never writes.
func TestOracle(t *testing.T) {
	need(t, "unshare", "mount", gssproxyBin)
	el7, err := os.ReadFile("testdata/el7-gssproxy.conf")
	if err != nil {
		t.Fatal(err)
	}
	// gssproxy exits 1 when it has no service at all: keep el7's, off.
	elOff := bytes.Replace(el7, []byte("kernel_nfsd = yes"), []byte("kernel_nfsd = no"), 1)
	deb := debianFiles(t)
	nfs := deb["24-nfs-server.conf"]
	replace := func(from, to string) []byte { return bytes.Replace(nfs, []byte(from), []byte(to), 1) }

	tests := []struct {
		name   string
		files  map[string][]byte
		links  map[string]string // name in etc/gssproxy -> relative target
		before bool              // gssproxy enables kernel NFS support before the hook
	}{
		{"el7 0.4.1 single gssproxy.conf", map[string][]byte{"gssproxy.conf": el7}, nil, true},
		{"debian 24-nfs-server.conf", deb, nil, true},
		{"debian, CRLF and UTF-8 BOM", map[string][]byte{"gssproxy.conf": deb["gssproxy.conf"], "24-nfs-server.conf": crlfBOM(nfs)}, nil, true},
		{"debian, UTF-16LE with BOM", map[string][]byte{"gssproxy.conf": deb["gssproxy.conf"], "24-nfs-server.conf": utf16LE(nfs)}, nil, true},
		{"debian, key case and tabs", map[string][]byte{"24-nfs-server.conf": replace("kernel_nfsd = yes", "KERNEL_Nfsd\t=\tOn\t")}, nil, true},
		{"debian, one-byte 1 (becomes 0)", map[string][]byte{"24-nfs-server.conf": replace("kernel_nfsd = yes", "kernel_nfsd=1")}, nil, true},
		{"debian, TRUE (becomes no and two blanks)", map[string][]byte{"24-nfs-server.conf": replace("kernel_nfsd = yes", "kernel_nfsd = TRUE")}, nil, true},
		{"debian via in-image symlink", map[string][]byte{"gssproxy.conf": deb["gssproxy.conf"], "../../usr/share/gssproxy/nfs.conf": nfs},
			map[string]string{"24-nfs-server.conf": "../../usr/share/gssproxy/nfs.conf"}, true},
		{"99-off.conf does not override 24-", map[string][]byte{"24-nfs-server.conf": nfs,
			"99-off.conf": []byte("[service/nfs-server]\n  kernel_nfsd = no\n")}, nil, true},
		{"first value wins: no then yes", map[string][]byte{"24-nfs-server.conf": replace("kernel_nfsd = yes", "kernel_nfsd = no\n  kernel_nfsd = yes")}, nil, false},
		{"NUL after the value: gssproxy's C strings end there", map[string][]byte{"24-nfs-server.conf": replace("kernel_nfsd = yes", "kernel_nfsd = yes\x00zz")}, nil, true},
		{"inline comment makes it false", map[string][]byte{"24-nfs-server.conf": replace("kernel_nfsd = yes", "kernel_nfsd = yes # on")}, nil, false},
		{"not a drop-in name", map[string][]byte{"gssproxy.conf": elOff, "nfs-server.conf": nfs, "100-nfs.conf": nfs, "24-nfs.conf.disabled": nfs}, nil, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBundle(t)
			dir := filepath.Join(b.rootfs, "etc/gssproxy")
			if tt.files["gssproxy.conf"] == nil { // gssproxy exits 1 without it
				b.write(t, "etc/gssproxy/gssproxy.conf", deb["gssproxy.conf"])
			}
			for name, content := range tt.files {
				b.write(t, filepath.Join("etc/gssproxy", name), content)
			}
			for name, target := range tt.links {
				if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			obs := askGssproxy(t, dir)
			t.Logf("before hook: gssproxy wrote %q to use-gss-proxy (observed %v after start)", obs.wrote, obs.after.Round(time.Millisecond))
			if (obs.wrote == "1") != tt.before || (obs.wrote != "" && obs.wrote != "1") {
				t.Fatalf("before the hook gssproxy wrote %q; want kernel NFS support enabled = %v", obs.wrote, tt.before)
			}

			before := statAll(t, dir)
			b.writeSpec(t, privilegedSpec())
			r := runHook(t, stateFor("oracle-"+string(rune('a'+i)), b.dir))
			m := logLine(t, r.stderr)
			if r.code != 0 || (m["decision"] != "edited" && m["decision"] != "clean") {
				t.Fatalf("hook: exit %d, log %s", r.code, r.stderr)
			}
			if tt.before && m["decision"] != "edited" {
				t.Fatalf("hook did not edit a config gssproxy reads as on: %s", r.stderr)
			}

			obs = askGssproxy(t, dir)
			t.Logf("after hook (%s): gssproxy wrote %q (gave up %v after start)", m["decision"], obs.wrote, obs.after.Round(time.Millisecond))
			if obs.wrote != "" {
				t.Fatalf("after the hook gssproxy still wrote %q", obs.wrote)
			}
			// Edited in place: every file keeps its inode and its length.
			if after := statAll(t, dir); !reflect.DeepEqual(after, before) {
				t.Fatalf("files changed inode or size:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// fileID is what an in-place edit keeps.
type fileID struct{ ino, size uint64 }

// statAll returns the inode and size of every file gssproxy may read in dir
// (following in-image symlinks, which the test makes relative).
func statAll(t *testing.T, dir string) map[string]fileID {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fileID{}
	for _, e := range ents {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, e.Name()), &st); err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fileID{st.Ino, uint64(st.Size)}
	}
	return out
}
