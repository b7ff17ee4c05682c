package kube

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The host records live in /tmp, which every user can write. A record this
// process did not write (another user's file, one with another owner) must
// not make the sweep, as root, remove files and dirs, unmount mounts or
// delete iptables rules of the machine; nor may a root-owned record make it
// touch anything but what a cluster changes (kubelet's paths, its DNAT
// rule, its bind mounts).
func TestSweepIgnoresForeignRecords(t *testing.T) {
	lockHost(t)
	canary := t.TempDir()
	file, dir := filepath.Join(canary, "machine-file"), filepath.Join(canary, "machine-dir")
	if err := os.WriteFile(file, []byte("the machine's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rec := hostRecord{PID: 1, Start: 1, DeviceFiles: []string{file}, CreatedDirs: []string{dir}}
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		uid, gid int
	}{{"another user's", 65534, 65534}, {"root's, naming what no cluster changes", 0, 0}} {
		f, err := os.CreateTemp(filepath.Dir(recordPrefix), filepath.Base(recordPrefix)+"hostile-*.json")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(f.Name()) })
		_, err = f.Write(raw)
		if err == nil {
			err = f.Chown(c.uid, c.gid)
		}
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		sweepStale(t, debianIptables, &hostRecord{path: "(none)"})
		for _, p := range []string{file, dir} {
			if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the sweep of %s record removed %s", c.name, p)
			}
		}
		os.Remove(f.Name())
	}
}

// save must not write through a file planted at its temp name (a symlink to
// a file of the machine's, in world-writable /tmp).
func TestRecordSaveDoesNotFollowPlantedFiles(t *testing.T) {
	r, err := newHostRecord()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(r.path); os.Remove(r.path + ".tmp") })
	victim := filepath.Join(t.TempDir(), "machine-file")
	if err := os.WriteFile(victim, []byte("the machine's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, r.path+".tmp"); err != nil {
		t.Fatal(err)
	}
	_ = r.setInstance("/tmp/lgrt-x")
	if b, _ := os.ReadFile(victim); string(b) != "the machine's\n" {
		t.Fatalf("save wrote through a symlink planted at its temp name: %s now holds %q", victim, b)
	}
}
