// Package nsreach finds the network namespaces that userspace can still
// reach: through a process or thread inside them, an nsfs bind mount in any
// mount namespace, or an open nsfs fd. A netns that is alive but reachable by
// none of these is leaked: nothing can enter it any more, and only the kernel
// object holding it (e.g. auth_rpcgss's RPC client) keeps it.
//
// The walk reads /proc while processes come and go: an entry that vanishes
// mid-walk is skipped. Any other error fails the walk, because an incomplete
// set would make live namespaces look leaked.
package nsreach

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

// Via says how a netns is reachable.
type Via string

const (
	// ViaProcess: the netns of a process (its thread-group leader).
	ViaProcess Via = "process"
	// ViaThread: the netns of a thread that left its process's netns.
	ViaThread Via = "thread"
	// ViaMount: an nsfs bind mount (ip netns add, CNI runtimes, pins).
	ViaMount Via = "mount"
	// ViaFd: an open nsfs fd held by some process.
	ViaFd Via = "fd"
)

// Ref is one way to reach a netns.
type Ref struct {
	Via Via `json:"via"`
	// Path opens the netns from this process's mount namespace, e.g.
	// /proc/42/ns/net, /proc/42/root/run/netns/x or /proc/42/fd/7.
	Path string `json:"path"`
	// PID is the process through which Path goes (0 for a mount in our own
	// mount namespace).
	PID int `json:"pid,omitempty"`
	// Alternates are further ways to reach the same netns (a few at most),
	// tried when this one vanished before the netns could be opened.
	Alternates []Ref `json:"-"`
}

// maxAlternates bounds the references kept per netns beyond the first.
const maxAlternates = 4

// Set maps every reachable netns to one way of reaching it.
type Set map[nsident.Identity]Ref

// Options tunes Reachable.
type Options struct {
	// ProcRoot is where procfs is mounted; "" means /proc.
	ProcRoot string
	// IgnoreMountsUnder lists directories whose nsfs mounts do not count,
	// e.g. leakguard's own pin directory: a netns held only by its pin is
	// abandoned by its pod, and should be judged as such.
	IgnoreMountsUnder []string
	// Unreadable, when set, is called once for each process whose
	// namespaces or fds cannot be inspected (EACCES/EPERM, e.g. an LSM
	// guards it), and the walk goes on without it. When nil, such a
	// process fails the walk: a netns held only by it would look leaked.
	Unreadable func(pid int, err error)
}

// Reachable walks procfs and returns every network namespace reachable from
// userspace. References are preferred in this order: process, thread,
// mount, fd.
func Reachable(opts Options) (Set, error) {
	w := walker{
		proc: opts.ProcRoot, ignore: cleanDirs(opts.IgnoreMountsUnder), onUnreadable: opts.Unreadable,
		set: Set{}, mntSeen: map[nsident.Identity]bool{}, unreadable: map[int]bool{},
	}
	if w.proc == "" {
		w.proc = "/proc"
	}
	self, err := nsident.OfPath(filepath.Join(w.proc, "self/ns/net"))
	if err != nil {
		return nil, fmt.Errorf("identify our own netns through %s: %w", w.proc, err)
	}
	// Every namespace file lives on the one nsfs: a mount's "net:[ino]"
	// root names the identity nsfsDev:ino.
	w.nsfsDev = self.Dev
	pids, err := w.pids()
	if err != nil {
		return nil, err
	}
	for _, pid := range pids {
		if err := w.tasks(pid); err != nil {
			return nil, err
		}
	}
	// Our own mount namespace first, so that its mounts get plain paths.
	if err := w.mounts(0); err != nil {
		return nil, err
	}
	for _, pid := range pids {
		if err := w.mounts(pid); err != nil {
			return nil, err
		}
	}
	for _, pid := range pids {
		if err := w.fds(pid); err != nil {
			return nil, err
		}
	}
	return w.set, nil
}

type walker struct {
	proc         string
	ignore       []string
	onUnreadable func(int, error)
	set          Set
	mntSeen      map[nsident.Identity]bool
	unreadable   map[int]bool
	nsfsDev      uint64
}

// tolerable reports whether an error about one of pid's entries lets the
// walk go on: the entry vanished, or the process is unreadable and the
// caller accepts that (it is told once per process).
func (w *walker) tolerable(pid int, err error) bool {
	if vanished(err) {
		return true
	}
	if w.onUnreadable != nil && pid != 0 && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) {
		if !w.unreadable[pid] {
			w.unreadable[pid] = true
			w.onUnreadable(pid, err)
		}
		return true
	}
	return false
}

// cleanDirs resolves symlinks (/var/run -> /run) so that the dirs compare
// with mountinfo's resolved mount points.
func cleanDirs(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if r, err := filepath.EvalSymlinks(d); err == nil {
			d = r
		}
		out = append(out, filepath.Clean(d))
	}
	return out
}

// vanished reports errors that mean the entry went away while we looked:
// the process exited, the thread exited, the fd was closed.
func vanished(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT)
}

func (w *walker) pids() ([]int, error) {
	ents, err := os.ReadDir(w.proc)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", w.proc, err)
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// add keeps r as a way to id. The alternates are there for when the first
// reference vanishes, so they must not vanish with it: one per process (its
// threads die with it), and a mount of our own mount namespace (PID 0, tied
// to no process) always gets a place, taking the last one if all are full.
func (w *walker) add(id nsident.Identity, r Ref) {
	first, ok := w.set[id]
	if !ok {
		w.set[id] = r
		return
	}
	durable := false
	for _, k := range append([]Ref{first}, first.Alternates...) {
		if r.PID != 0 && k.PID == r.PID {
			return
		}
		durable = durable || k.PID == 0
	}
	switch {
	case len(first.Alternates) < maxAlternates:
		first.Alternates = append(first.Alternates, r)
	case r.PID == 0 && !durable:
		first.Alternates[len(first.Alternates)-1] = r
	}
	w.set[id] = first
}

// tasks records the netns of every thread of pid (the leader included).
func (w *walker) tasks(pid int) error {
	dir := filepath.Join(w.proc, strconv.Itoa(pid), "task")
	ents, err := os.ReadDir(dir)
	if err != nil && w.tolerable(pid, err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list threads of pid %d: %w", pid, err)
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var path string
		via := ViaThread
		if tid == pid {
			via, path = ViaProcess, filepath.Join(w.proc, strconv.Itoa(pid), "ns/net")
		} else {
			path = filepath.Join(dir, e.Name(), "ns/net")
		}
		id, err := statNS(path)
		if err != nil && w.tolerable(pid, err) {
			continue // exited, or a zombie leader
		}
		if err != nil {
			return fmt.Errorf("netns of thread %d of pid %d: %w", tid, pid, err)
		}
		w.add(id, Ref{Via: via, Path: path, PID: pid})
	}
	return nil
}

// statNS returns the dev+ino of the namespace file at path (following the
// magic link). Namespace files are always on nsfs.
func statNS(path string) (nsident.Identity, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsident.Identity{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return nsident.Identity{Dev: st.Dev, Ino: st.Ino}, nil
}

// mounts records the nsfs netns mounts of pid's mount namespace (pid 0:
// ours), once per mount namespace.
func (w *walker) mounts(pid int) error {
	base := filepath.Join(w.proc, "self")
	if pid != 0 {
		base = filepath.Join(w.proc, strconv.Itoa(pid))
	}
	mnt, err := statNS(filepath.Join(base, "ns/mnt"))
	if err != nil && w.tolerable(pid, err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mount namespace of %s: %w", base, err)
	}
	if w.mntSeen[mnt] {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(base, "mountinfo"))
	if (err != nil && w.tolerable(pid, err)) || (err == nil && len(b) == 0 && pid != 0) {
		// A process that exited reads as an empty mountinfo; try the
		// namespace again through another process.
		return nil
	}
	if err != nil {
		return fmt.Errorf("read mountinfo of %s: %w", base, err)
	}
	w.mntSeen[mnt] = true
	for _, m := range ParseMountinfo(b) {
		if m.FSType != "nsfs" || w.ignored(m.MountPoint) {
			continue
		}
		ino, ok := netnsIno(m.Root)
		if !ok {
			continue
		}
		r := Ref{Via: ViaMount, Path: m.MountPoint}
		if pid != 0 {
			// The mount point only exists in that process's mount
			// namespace: walk to it through the process's root.
			r = Ref{Via: ViaMount, Path: filepath.Join(base, "root", m.MountPoint), PID: pid}
		}
		w.add(nsident.Identity{Dev: w.nsfsDev, Ino: ino}, r)
	}
	return nil
}

func (w *walker) ignored(mountPoint string) bool {
	for _, d := range w.ignore {
		if mountPoint == d || strings.HasPrefix(mountPoint, d+"/") || d == "/" {
			return true
		}
	}
	return false
}

// netnsIno parses the "net:[4026531840]" form of a namespace file name.
func netnsIno(s string) (uint64, bool) {
	s, ok := strings.CutPrefix(s, "net:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(s, 10, 64)
	return ino, err == nil
}

// fds records the netns behind every open nsfs fd of pid. An fd opened on
// a netns name reads as "net:[ino]"; one opened through a bind mount reads
// as that mount's path (or "/" once the mount is detached), so path-like
// targets are checked by their device too.
func (w *walker) fds(pid int) error {
	dir := filepath.Join(w.proc, strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	if err != nil && w.tolerable(pid, err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list fds of pid %d: %w", pid, err)
	}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		target, err := os.Readlink(path)
		if err != nil && w.tolerable(pid, err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read fd link %s: %w", path, err)
		}
		_, named := netnsIno(target)
		if !named && !strings.HasPrefix(target, "/") {
			continue // socket:[..], pipe:[..], anon_inode:..., other namespaces
		}
		id, isNetns, err := w.fdNetns(path, named)
		if err != nil && w.tolerable(pid, err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("netns of fd %s: %w", path, err)
		}
		if isNetns {
			w.add(id, Ref{Via: ViaFd, Path: path, PID: pid})
		}
	}
	return nil
}

// fdNetns identifies the file behind an fd link and says whether it is a
// netns. named means the link already read "net:[ino]".
func (w *walker) fdNetns(path string, named bool) (nsident.Identity, bool, error) {
	var stx unix.Statx_t
	// DONT_SYNC: a regular file on NFS or FUSE is answered from cache,
	// never by a server that might hang.
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_STATX_DONT_SYNC, unix.STATX_INO, &stx); err != nil {
		return nsident.Identity{}, false, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	id := nsident.Identity{Dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor), Ino: stx.Ino}
	if id.Dev != w.nsfsDev {
		return id, false, nil
	}
	if named {
		return id, true, nil
	}
	// An nsfs file reached through a path: which kind of namespace?
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return id, false, err
	}
	defer f.Close()
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		return id, false, fmt.Errorf("namespace type of %s: %w", path, err)
	}
	return id, t == unix.CLONE_NEWNET, nil
}

// Reachable reports whether id is in the set.
func (s Set) Reachable(id nsident.Identity) bool {
	_, ok := s[id]
	return ok
}
