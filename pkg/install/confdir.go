package install

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/libcni"
	"golang.org/x/sys/unix"
)

// confExts are the files a runtime loads from the conf dir (containerd's
// go-cni, CRI-O's ocicni and the kubelet's old dockershim alike), sorted by
// name; containerd uses the first.
var confExts = []string{".conf", ".conflist", ".json"}

// maxConfSize caps what is read of a config file (a primary's conflist is a
// few KiB).
const maxConfSize = 1 << 20

// tempPrefix starts the name of every temp file leakguard writes; the
// ".tmp-" suffix that os.CreateTemp's pattern ends with is no extension a
// runtime loads.
const tempPrefix = ".leakguard-"

// confFile is one config file of the conf dir, read once: every decision
// about it (is it loadable, what to write) is made on these bytes, so a
// writer racing us cannot make us parse one version and edit another.
type confFile struct {
	Name   string
	Data   []byte
	Sum    [sha256.Size]byte
	IsList bool
	// List is the file as a conflist (asList), nil when Err is set.
	List    object
	Plugins int
	// Err says why a runtime would not load it.
	Err error
	// Mode, UID and GID are kept when the file is rewritten.
	Mode     os.FileMode
	UID, GID int
	// Symlink: the name is a symlink (read through, never written through).
	Symlink bool
}

// listConfs returns the base names of the dir's config files in runtime
// order, as libcni lists them.
func listConfs(dir string) ([]string, error) {
	paths, err := libcni.ConfFiles(dir, confExts)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	names := make([]string, 0, len(paths))
	for _, p := range paths {
		names = append(names, filepath.Base(p))
	}
	sort.Strings(names)
	return names, nil
}

// readConf reads dir/name and parses it as a runtime would: a .conflist
// with libcni's ConfListFromBytes (at least one plugin), a .conf or .json
// with ConfFromBytes (a type) then as the one-entry list ConfListFromConf
// makes of it. A file that cannot be read at all is returned with Err set.
func readConf(dir, name string) *confFile {
	c := &confFile{Name: name, IsList: strings.HasSuffix(name, ".conflist")}
	data, st, symlink, err := readRegular(filepath.Join(dir, name), maxConfSize)
	c.Symlink = symlink
	if err != nil {
		c.Err = err
		return c
	}
	c.Data, c.Sum = data, sha256.Sum256(data)
	c.Mode, c.UID, c.GID = os.FileMode(st.Mode)&os.ModePerm, int(st.Uid), int(st.Gid)
	c.Err = c.parse(dir)
	return c
}

func (c *confFile) parse(dir string) error {
	if c.IsList {
		list, err := libcni.ConfListFromBytes(c.Data)
		if err != nil {
			return err
		}
		if len(list.Plugins) == 0 {
			return errNoInlinePlugins
		}
		if !list.LoadOnlyInlinedPlugins {
			// libcni appends <dir>/<name>/*.conf after the inline
			// entries: leakguard would not run last.
			extra, err := libcni.ConfFiles(filepath.Join(dir, list.Name), []string{".conf"})
			if err != nil {
				return err
			}
			if len(extra) > 0 {
				return fmt.Errorf("network %q also loads plugins from %s, after any inline entry: not supported", list.Name, filepath.Join(dir, list.Name))
			}
		}
	} else {
		conf, err := libcni.ConfFromBytes(c.Data) //nolint:staticcheck // the runtimes still load .conf files this way
		if err != nil {
			return err
		}
		if conf.Network.Type == "" {
			return errors.New("no type")
		}
	}
	o, err := parseObject(c.Data)
	if err != nil {
		return err
	}
	if c.List, err = asList(o, c.IsList); err != nil {
		return err
	}
	ps, err := plugins(c.List)
	if err != nil {
		return err
	}
	c.Plugins = len(ps)
	return nil
}

// errTooBig: a regular file over the read cap. Runtimes read config files
// whole, so they may well load it: it is never skipped as unloadable.
var errTooBig = errors.New("over the read cap")

// mayLoad tells whether a runtime may load the file: it parses, or it is
// too big for leakguard to tell (a runtime reads it whole).
func (c *confFile) mayLoad() bool {
	return c.Err == nil || errors.Is(c.Err, errTooBig)
}

// holds tells whether the file's chain runs leakguard where it works.
func (c *confFile) holds() bool {
	if c.Err != nil {
		return false
	}
	ps, err := plugins(c.List)
	return err == nil && chainHolds(ps)
}

// leakguardOnly: a chain of nothing but chained leakguard entries is not a
// network (leakguard's ADD needs a main plugin's prevResult).
func (c *confFile) leakguardOnly() bool {
	ps, err := plugins(c.List)
	if err != nil {
		return false
	}
	for _, p := range ps {
		if e, err := readEntry(p); err != nil || !e.leakguard() || e.wraps() {
			return false
		}
	}
	return true
}

// readRegular reads at most limit bytes of path, following a symlink (as a
// runtime reads configs) but never blocking on a FIFO or device and
// refusing anything but a regular file. symlink tells whether path itself
// is a symlink.
func readRegular(path string, limit int64) ([]byte, *unix.Stat_t, bool, error) {
	var lst unix.Stat_t
	if err := unix.Lstat(path, &lst); err != nil {
		return nil, nil, false, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	symlink := lst.Mode&unix.S_IFMT == unix.S_IFLNK
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, symlink, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, nil, symlink, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, nil, symlink, fmt.Errorf("%s: not a regular file", path)
	}
	if st.Size > limit {
		return nil, nil, symlink, fmt.Errorf("%s: %d bytes, %w (%d bytes)", path, st.Size, errTooBig, limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, nil, symlink, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, nil, symlink, fmt.Errorf("%s: %w (%d bytes)", path, errTooBig, limit)
	}
	return data, &st, symlink, nil
}

// errNoDir: a dir the installer needs does not exist (yet).
var errNoDir = errors.New("does not exist yet")

// checkDir checks that dir is a directory that only its owner, root or us,
// can change: the installer reads what is there and runtimes run it.
func checkDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("%s %w", dir, errNoDir)
		}
		return &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s is owned by uid %d, not root or us", dir, st.Uid)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %04o)", dir, st.Mode&0o7777)
	}
	return nil
}
