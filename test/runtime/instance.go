package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/netns/nsreach"
)

// instanceRoot is where instance dirs are made: short on purpose, unix
// socket paths (containerd's shim socket_dir: 38 bytes) are limited.
const instanceRoot = "/tmp"

const (
	instancePrefix = "lgrt-"
	ownerFile      = "owner"
)

// instance is the temp dir of one runtime instance and the cgroup parent of
// its pods: everything the instance creates lives under one of the two, so
// teardown can find it all, even after a killed test process.
type instance struct {
	dir string
	// cgroupParent is the pods' cgroup parent, under every hierarchy's root.
	cgroupParent string
}

// newInstance creates the instance dir, records its owner (this process) and
// first tears down instances whose owner died without cleaning up (a test
// binary killed by its timeout runs no t.Cleanup).
func newInstance(t testing.TB, kind string) *instance {
	t.Helper()
	sweepStale(t)
	dir, err := os.MkdirTemp(instanceRoot, instancePrefix+kind+"-")
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{dir: dir, cgroupParent: "/" + filepath.Base(dir)}
	start, err := procStartTime(os.Getpid())
	if err == nil {
		err = os.WriteFile(in.path(ownerFile), fmt.Appendf(nil, "%d %d\n", os.Getpid(), start), 0o600)
	}
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("instance owner file: %v", err)
	}
	return in
}

func (in *instance) path(elem ...string) string {
	return filepath.Join(append([]string{in.dir}, elem...)...)
}

// teardown kills every process that belongs to the instance (its command
// line names the dir, or it runs in the instance's cgroups: daemons, shims,
// containers), then removes the mounts under the dir, the cgroups and the
// dir. It is the backstop after the orderly stop of each runtime.
func (in *instance) teardown() error {
	var errs []error
	if err := in.killAll(15 * time.Second); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(in.dir); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroups(in.cgroupParent); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(in.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// processes returns the pids that belong to the instance.
func (in *instance) processes() []int {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && namesDir(cmdline, in.dir) {
			pids = append(pids, pid)
			continue
		}
		if cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil && inCgroup(string(cg), in.cgroupParent) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// namesDir reports whether a NUL-separated command line mentions dir or a
// path below it.
func namesDir(cmdline []byte, dir string) bool {
	return bytes.Contains(cmdline, []byte(dir+"/")) || bytes.Contains(append(cmdline, 0), append([]byte(dir), 0))
}

// inCgroup reports whether a /proc/<pid>/cgroup text puts the process in
// parent or below, in any hierarchy.
func inCgroup(text, parent string) bool {
	for _, line := range strings.Split(text, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (parts[2] == parent || strings.HasPrefix(parts[2], parent+"/")) {
			return true
		}
	}
	return false
}

func (in *instance) killAll(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := in.processes()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of %s survive SIGKILL: %v", in.dir, pids)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unmountUnder detaches every mount at or below dir, deepest first, until
// none is left (mounts can be stacked).
func unmountUnder(dir string) error {
	for range 10 {
		mounts, err := mountPoints()
		if err != nil {
			return err
		}
		var ours []string
		for _, m := range mounts {
			if m == dir || strings.HasPrefix(m, dir+"/") {
				ours = append(ours, m)
			}
		}
		if len(ours) == 0 {
			return nil
		}
		slices.SortFunc(ours, func(a, b string) int { return len(b) - len(a) })
		for _, m := range ours {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", m, err)
			}
		}
	}
	return fmt.Errorf("mounts under %s keep coming back", dir)
}

// mountPoints lists the mount points of the harness's mount namespace.
func mountPoints() ([]string, error) {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range nsreach.ParseMountinfo(raw) {
		out = append(out, m.MountPoint)
	}
	return out, nil
}

// cgroupRoot holds one mount per hierarchy (cgroup v1 controllers, the v2
// "unified" one, name=systemd) or is itself the v2 mount.
const cgroupRoot = "/sys/fs/cgroup"

// removeCgroups removes parent and everything below it in every hierarchy,
// children first (cgroups are removed with rmdir, once empty of processes).
func removeCgroups(parent string) error {
	roots := []string{cgroupRoot}
	entries, err := os.ReadDir(cgroupRoot)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() && e.Type()&os.ModeSymlink == 0 {
			roots = append(roots, filepath.Join(cgroupRoot, e.Name()))
		}
	}
	var errs []error
	for _, root := range roots {
		top := filepath.Join(root, parent)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
		for _, d := range dirs {
			if err := removeCgroup(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// removeCgroup rmdirs one cgroup, retrying while the kernel still counts a
// process that was just killed.
func removeCgroup(dir string) error {
	var err error
	for range 50 {
		if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, err)
}

// procStartTime is field 22 of /proc/<pid>/stat: with the pid it names one
// process for good (pids are reused).
func procStartTime(pid int) (uint64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm (field 2) may hold spaces and parens: split after its last ')'.
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

// sweepStale tears down instance dirs whose owner process is gone.
func sweepStale(t testing.TB) {
	matches, _ := filepath.Glob(filepath.Join(instanceRoot, instancePrefix+"*"))
	for _, dir := range matches {
		raw, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not an instance, or one being created
		}
		var pid int
		var start uint64
		if _, err := fmt.Sscanf(string(raw), "%d %d", &pid, &start); err != nil {
			continue
		}
		if now, err := procStartTime(pid); err == nil && now == start {
			continue // alive
		}
		in := &instance{dir: dir, cgroupParent: "/" + filepath.Base(dir)}
		if err := in.teardown(); err != nil {
			t.Logf("stale runtime instance %s: %v", dir, err)
		} else {
			t.Logf("removed stale runtime instance %s (owner %d gone)", dir, pid)
		}
	}
}
