package kube

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What kubelet writes on the host whatever its flags say (paths compiled
// in): the device manager's socket and checkpoint, and a symlink per
// container log for log collectors.
const (
	kubeletVarLib    = "/var/lib/kubelet"
	devicePluginsDir = "/var/lib/kubelet/device-plugins"
	containerLogsDir = "/var/log/containers"
)

// devicePluginFiles are what kubelet's device manager creates in
// devicePluginsDir.
var devicePluginFiles = []string{"kubelet.sock", "kubelet_internal_checkpoint"}

// Cluster-wide lock and records: one cluster at a time on the machine (the
// host paths above, the service IP and its DNAT rule are shared), and a
// record per cluster of what it changed on the host, outside its instance
// dir, so that a killed run's changes are undone by the next one.
const (
	lockFile     = "/tmp/leakguard-kube.lock"
	recordPrefix = "/tmp/lgk8s-"
	// lockWait bounds the wait for another process's cluster (make test in
	// another worktree).
	lockWait = 15 * time.Minute
)

// hostRecord is what a cluster changed outside its instance dir. It is
// written before each change (a kill in between leaves a record of a change
// that did not happen: undoing it is a no-op).
type hostRecord struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
	// Instance is the containerd instance dir the cluster lives in: log
	// links pointing below it are the cluster's ("" until it exists).
	Instance string `json:"instance"`
	// DNAT is the iptables rule (nat table, after -A/-D) when added.
	DNAT []string `json:"dnat,omitempty"`
	// CreatedDirs did not exist before kubelet started (parents first).
	CreatedDirs []string `json:"createdDirs,omitempty"`
	// DeviceFiles are devicePluginFiles that did not exist before.
	DeviceFiles []string `json:"deviceFiles,omitempty"`
	// Mounts are shared bind mounts of a dir onto itself, outside the
	// instance dir (whose mounts test/runtime undoes).
	Mounts []string `json:"mounts,omitempty"`

	path string
}

// lockHost takes the machine-wide cluster lock, waiting for another
// cluster to finish; released when the test ends (or the process dies).
func lockHost(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(lockFile, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatalf("cluster lock: %v", err)
	}
	deadline := time.Now().Add(lockWait)
	logged := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			t.Fatalf("cluster lock %s: %v", lockFile, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			t.Fatalf("another test cluster holds %s for more than %v", lockFile, lockWait)
		}
		if !logged {
			t.Logf("waiting for another test cluster on this machine (%s)", lockFile)
			logged = true
		}
		time.Sleep(time.Second)
	}
	t.Cleanup(func() { f.Close() })
}

// newHostRecord writes an empty record owned by this process.
func newHostRecord() (*hostRecord, error) {
	start, err := procStartTime(os.Getpid())
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(recordPrefix), filepath.Base(recordPrefix)+"*.json")
	if err != nil {
		return nil, err
	}
	f.Close()
	r := &hostRecord{PID: os.Getpid(), Start: start, path: f.Name()}
	return r, r.save()
}

// setInstance records the containerd instance dir the cluster lives in.
func (r *hostRecord) setInstance(dir string) error {
	r.Instance = dir
	return r.save()
}

// save replaces the record atomically, through a temp file of its own
// (O_EXCL, random name): a fixed name in /tmp could be planted, as a
// symlink to a file of the machine's or as another user's file.
func (r *hostRecord) save() error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(r.path), filepath.Base(r.path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = f.Write(raw)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), r.path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// maxRecordSize bounds a record read by the sweep (a few hundred bytes).
const maxRecordSize = 64 << 10

// readRecord reads a record another run of this harness wrote: a regular
// file (not followed if a symlink), of one link, owned by this user and
// writable by no one else. /tmp is everyone's: anything else is not ours.
func readRecord(p string) (*hostRecord, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, errors.New("not a regular file")
	case int(st.Uid) != os.Geteuid():
		return nil, fmt.Errorf("owned by uid %d, not by this user", st.Uid)
	case st.Mode&0o022 != 0:
		return nil, fmt.Errorf("writable by others (mode %o)", st.Mode&0o7777)
	case st.Nlink != 1:
		return nil, fmt.Errorf("%d hard links", st.Nlink)
	case st.Size > maxRecordSize:
		return nil, fmt.Errorf("%d bytes", st.Size)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxRecordSize+1))
	if err != nil {
		return nil, err
	}
	r := &hostRecord{path: p}
	if err := json.Unmarshal(raw, r); err != nil {
		return nil, err
	}
	return r, r.check()
}

// check refuses a record naming anything a cluster does not change: its
// undo removes, unmounts and deletes what the record names, as root.
func (r *hostRecord) check() error {
	if r.Instance != "" && !isInstanceDir(r.Instance) {
		return fmt.Errorf("instance %q is no test/runtime instance dir", r.Instance)
	}
	for _, f := range r.DeviceFiles {
		if !slices.ContainsFunc(devicePluginFiles, func(n string) bool { return f == filepath.Join(devicePluginsDir, n) }) {
			return fmt.Errorf("device file %q is not kubelet's", f)
		}
	}
	for _, d := range r.CreatedDirs {
		if !slices.Contains([]string{kubeletVarLib, devicePluginsDir, containerLogsDir}, d) {
			return fmt.Errorf("created dir %q is not kubelet's", d)
		}
	}
	tmp := filepath.Clean(os.TempDir()) + "/"
	for _, m := range r.Mounts {
		if m != filepath.Clean(m) || !strings.HasPrefix(m, tmp) {
			return fmt.Errorf("mount %q is not below %s (the CNI dir is a test's temp dir)", m, tmp)
		}
	}
	if r.DNAT != nil {
		port := ""
		if n := len(r.DNAT); n > 0 {
			_, port, _ = strings.Cut(r.DNAT[n-1], "127.0.0.1:")
		}
		p, err := strconv.Atoi(port)
		if r.Instance == "" || err != nil || !slices.Equal(r.DNAT, dnatRule(ServiceIP, r.Instance, p)) {
			return fmt.Errorf("DNAT rule %q is not a cluster's", r.DNAT)
		}
	}
	return nil
}

// isInstanceDir tells whether dir is named as test/runtime names its
// instance dirs (/tmp/lgrt-<kind>-<random>).
func isInstanceDir(dir string) bool {
	return filepath.Dir(dir) == "/tmp" && strings.HasPrefix(filepath.Base(dir), "lgrt-") && dir == filepath.Clean(dir)
}

// noteKubeletPaths records which of kubelet's host paths do not exist yet:
// those kubelet will create are the cluster's to remove.
func (r *hostRecord) noteKubeletPaths() error {
	for _, d := range []string{kubeletVarLib, devicePluginsDir, containerLogsDir} {
		if _, err := os.Lstat(d); errors.Is(err, os.ErrNotExist) {
			r.CreatedDirs = append(r.CreatedDirs, d)
		} else if err != nil {
			return err
		}
	}
	for _, f := range devicePluginFiles {
		p := filepath.Join(devicePluginsDir, f)
		_, err := os.Lstat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			r.DeviceFiles = append(r.DeviceFiles, p)
		case err != nil:
			return err
		case f == "kubelet.sock":
			// Another kubelet's socket: ours would replace it.
			return fmt.Errorf("%s exists: a kubelet runs on this machine, a test cluster would take over its device plugins", p)
		}
	}
	return r.save()
}

// bindShared bind-mounts dir onto itself and makes the mount shared.
func (r *hostRecord) bindShared(dir string) error {
	r.Mounts = append(r.Mounts, dir)
	if err := r.save(); err != nil {
		return err
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// addDNAT adds the rule sending the kubernetes service IP to the apiserver
// (there is no kube-proxy): hostNetwork pods reach the API through it.
func (r *hostRecord) addDNAT(iptables, serviceIP string, port int) error {
	r.DNAT = dnatRule(serviceIP, r.Instance, port)
	if err := r.save(); err != nil {
		return err
	}
	return runIptables(iptables, "-A", r.DNAT)
}

func dnatRule(serviceIP, instance string, port int) []string {
	return []string{"OUTPUT", "-d", serviceIP + "/32", "-p", "tcp", "--dport", "443",
		"-m", "comment", "--comment", "leakguard-test " + instance,
		"-j", "DNAT", "--to-destination", "127.0.0.1:" + strconv.Itoa(port)}
}

func runIptables(iptables, op string, rule []string) error {
	args := append([]string{"-w", "5", "-t", "nat", op}, rule...)
	if out, err := exec.Command(iptables, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// undo reverts what the record names and removes the record. Only what the
// cluster made goes: log links pointing into its instance dir, the device
// manager's files and the dirs that did not exist before (if empty).
func (r *hostRecord) undo(iptables string) error {
	var errs []error
	if r.DNAT != nil {
		// -C first: a rule never added (killed in between) is not an error.
		if runIptables(iptables, "-C", r.DNAT) == nil {
			if err := runIptables(iptables, "-D", r.DNAT); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, m := range slices.Backward(r.Mounts) {
		// Detached with what is mounted below (netns pins): lazily, as
		// test/runtime's teardown does.
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if r.Instance != "" {
		if err := removeLogLinks(r.Instance); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range r.DeviceFiles {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	dirs := slices.Clone(r.CreatedDirs)
	slices.Reverse(dirs) // children first
	for _, d := range dirs {
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove %s (created by the test kubelet): %w", d, err))
		}
	}
	if len(errs) == 0 {
		if err := os.Remove(r.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeLogLinks removes the /var/log/containers symlinks whose target is
// below dir (kubelet links each container's log file there).
func removeLogLinks(dir string) error {
	entries, err := os.ReadDir(containerLogsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.Type()&os.ModeSymlink == 0 {
			continue
		}
		p := filepath.Join(containerLogsDir, e.Name())
		target, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(target, dir+"/") {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sweepStale undoes the host changes of clusters whose owner died without
// cleaning up (a test binary killed by its timeout runs no t.Cleanup); their
// instance dirs, processes, mounts and cgroups are test/runtime's sweep.
// Called with the cluster lock held.
func sweepStale(t testing.TB, iptables string, own *hostRecord) {
	// Temp files of a save cut short by a kill (ours only).
	tmps, _ := filepath.Glob(recordPrefix + "*.json.tmp*")
	for _, p := range tmps {
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && int(st.Uid) == os.Geteuid() {
			os.Remove(p)
		}
	}
	matches, _ := filepath.Glob(recordPrefix + "*.json")
	for _, p := range matches {
		if p == own.path {
			continue
		}
		r, err := readRecord(p)
		if err != nil {
			t.Logf("cluster record %s ignored: %v", p, err)
			continue
		}
		if now, err := procStartTime(r.PID); err == nil && now == r.Start {
			continue // alive (cannot be: we hold the lock; keep it anyway)
		}
		if err := r.undo(iptables); err != nil {
			t.Logf("stale test cluster %s: %v", r.Instance, err)
		} else {
			t.Logf("undid the host changes of stale test cluster %s (owner %d gone)", r.Instance, r.PID)
		}
	}
}

// procStartTime is field 22 of /proc/<pid>/stat: with the pid it names one
// process for good (pids are reused).
func procStartTime(pid int) (uint64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	fields := strings.Fields(string(raw[i+1:]))
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}
