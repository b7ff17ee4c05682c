package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/test/runtime/cnicall"
)

// DefaultCNIVersion is the conflist version for containerd 2.x (STATUS
// needs 1.1.0); cri-dockerd 0.3 speaks at most 1.0.0.
const DefaultCNIVersion = "1.1.0"

// ChainOptions choose the conflist NewCNI (and WriteConf) writes: the
// reference bridge with host-local, optionally followed by leakguard.
type ChainOptions struct {
	// CNIVersion defaults to DefaultCNIVersion.
	CNIVersion string
	// Leakguard appends the leakguard entry (stateDir, logFile and logLevel
	// debug are set to the CNI's private paths).
	Leakguard bool
	// LeakguardConf adds or overrides keys of the leakguard entry
	// (pinNetns, say).
	LeakguardConf map[string]any
	// Wrap writes wrapper mode instead of the chain: one .conf of type
	// leakguard whose delegate is the bridge entry (Leakguard is implied).
	// It is fixed by NewCNI: WriteConf refuses to switch it, since the file
	// name's extension follows it.
	Wrap bool
	// NoLeakguardBinary leaves leakguard out of the bin dir (NewCNI only):
	// an installer under test must put it there.
	NoLeakguardBinary bool
}

// CNI is a private CNI setup: a bin dir, a conf dir with one conflist, and
// the data dirs of host-local and leakguard. Every plugin in BinDir is
// test/cmd/cnispy in front of the real one, so Calls tells what the runtime
// sent.
type CNI struct {
	Network  *Network
	BinDir   string
	ConfDir  string
	ConfFile string
	// IPAMDir is host-local's dataDir.
	IPAMDir string
	// StateDir and LogFile are leakguard's (StateDir is created by
	// leakguard, 0700, at its first call).
	StateDir string
	LogFile  string
	// PinDir is leakguard's default pin dir (pinNetns), which leakguard
	// bind-mounts onto itself.
	PinDir string
	// CacheDir is a libcni cache dir for runtimes that can set one
	// (cri-dockerd); containerd writes to /var/lib/cni/results.
	CacheDir string
}

// spiedPlugins are put in every bin dir; loopback because containerd runs it
// for every pod on top of the configured network.
var spiedPlugins = []string{"bridge", "host-local", "loopback", "leakguard"}

// NewCNI lays out the CNI dirs under dir and writes the conflist for net.
func NewCNI(t testing.TB, tools Tools, net *Network, dir string, opts ChainOptions) *CNI {
	t.Helper()
	c := &CNI{
		Network:  net,
		BinDir:   filepath.Join(dir, "cni", "bin"),
		ConfDir:  filepath.Join(dir, "cni", "net.d"),
		IPAMDir:  filepath.Join(dir, "cni", "ipam"),
		StateDir: filepath.Join(dir, "cni", "leakguard"),
		LogFile:  filepath.Join(dir, "cni", "leakguard.log"),
		PinDir:   filepath.Join(dir, "cni", "leakguard", "netns"),
		CacheDir: filepath.Join(dir, "cni", "cache"),
	}
	c.ConfFile = filepath.Join(c.ConfDir, "10-"+net.Name+confExt(opts))
	for _, d := range []string{filepath.Join(c.BinDir, cnicall.SpyDir), c.ConfDir, c.IPAMDir, c.CacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range spiedPlugins {
		if name == "leakguard" && opts.NoLeakguardBinary {
			continue
		}
		target := tools.ReferencePlugin(name)
		if name == "leakguard" {
			target = tools.Leakguard()
		}
		if err := os.Symlink(target, filepath.Join(c.BinDir, cnicall.SpyDir, name)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(tools.TestBinary("cnispy"), filepath.Join(c.BinDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WriteConf(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("CNI calls:\n%s\nleakguard log:\n%s", c.describeCalls(), c.LeakguardLog())
		}
		c.removeLoopbackCache()
		c.unmountPinDir()
	})
	return c
}

// confExt is the conf file's extension: containerd's libcni loads a single
// plugin config (.conf) as a one-element list, so wrapper mode is proven in
// the form conf/10-bridge-wrapped.conf ships.
func confExt(opts ChainOptions) string {
	if opts.Wrap {
		return ".conf"
	}
	return ".conflist"
}

// Conflist renders the chain for opts (for Wrap, the single wrapper config).
func (c *CNI) Conflist(opts ChainOptions) ([]byte, error) {
	version := opts.CNIVersion
	if version == "" {
		version = DefaultCNIVersion
	}
	// No gateway and no masquerade: the bridge lives in the host netns, and
	// isGateway would turn on the machine's net.ipv4.ip_forward.
	plugins := []map[string]any{{
		"type":      "bridge",
		"bridge":    c.Network.Bridge,
		"isGateway": false,
		"ipMasq":    false,
		"ipam": map[string]any{
			"type":    "host-local",
			"dataDir": c.IPAMDir,
			"ranges":  [][]map[string]string{{{"subnet": c.Network.Subnet.String()}}},
		},
	}}
	if opts.Leakguard || opts.Wrap {
		lg := map[string]any{
			"type":     "leakguard",
			"stateDir": c.StateDir,
			"logFile":  c.LogFile,
			"logLevel": "debug",
		}
		for k, v := range opts.LeakguardConf {
			lg[k] = v
		}
		if opts.Wrap {
			lg["cniVersion"], lg["name"], lg["delegate"] = version, c.Network.Name, plugins[0]
			return json.MarshalIndent(lg, "", "  ")
		}
		plugins = append(plugins, lg)
	}
	return json.MarshalIndent(map[string]any{
		"cniVersion": version,
		"name":       c.Network.Name,
		"plugins":    plugins,
	}, "", "  ")
}

// WriteConf (re)writes the conflist: a temp file in the conf dir renamed
// over it, which containerd's watcher sees (it ignores files created
// elsewhere and moved in).
func (c *CNI) WriteConf(opts ChainOptions) error {
	if filepath.Ext(c.ConfFile) != confExt(opts) {
		return fmt.Errorf("conf file %s cannot hold a config with Wrap=%t", c.ConfFile, opts.Wrap)
	}
	raw, err := c.Conflist(opts)
	if err != nil {
		return err
	}
	// A name without a CNI extension: containerd does not try to load it.
	tmp := filepath.Join(c.ConfDir, ".tmp-"+c.Network.Name)
	if err := os.WriteFile(tmp, raw, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.ConfFile)
}

// Calls returns every CNI call made through BinDir so far, oldest first.
func (c *CNI) Calls() ([]cnicall.Call, error) { return cnicall.Read(c.BinDir) }

// CallsFor returns the calls of one plugin and verb for one container.
func (c *CNI) CallsFor(t testing.TB, plugin, command, containerID string) []cnicall.Call {
	t.Helper()
	calls, err := c.Calls()
	if err != nil {
		t.Fatalf("read CNI calls: %v", err)
	}
	return cnicall.Filter(calls, func(k cnicall.Call) bool {
		return k.Plugin == plugin && k.Command == command && k.ContainerID == containerID
	})
}

// LeakguardLog returns leakguard's log ("" before its first call).
func (c *CNI) LeakguardLog() string {
	b, err := os.ReadFile(c.LogFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Sprintf("(cannot read %s: %v)", c.LogFile, err)
	}
	return string(b)
}

// LeakguardLogLines returns leakguard's log records (JSON objects) for one
// container.
func (c *CNI) LeakguardLogLines(t testing.TB, containerID string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(c.LeakguardLog(), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("leakguard log line %q: %v", line, err)
		}
		if containerID == "" || rec["containerID"] == containerID {
			out = append(out, rec)
		}
	}
	return out
}

// StateEntries lists what is left under leakguard's state dir (relative
// paths of files and dirs, the dir itself excluded).
func (c *CNI) StateEntries(t testing.TB) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(c.StateDir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != c.StateDir {
			rel, _ := filepath.Rel(c.StateDir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("walk leakguard state dir: %v", err)
	}
	return out
}

func (c *CNI) describeCalls() string {
	calls, err := c.Calls()
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, k := range calls {
		fmt.Fprintf(&b, "  %s %s\n", k.Time.Format("15:04:05.000"), k)
		if k.Stderr != "" {
			fmt.Fprintf(&b, "    stderr: %s\n", strings.TrimSpace(k.Stderr))
		}
	}
	return b.String()
}

// unmountPinDir undoes leakguard's self-bind of the pin dir (and any pin
// left in it), so that the temp dir can be removed.
func (c *CNI) unmountPinDir() {
	for range maxPinDirMounts {
		if unix.Unmount(c.PinDir, unix.MNT_DETACH) != nil {
			return
		}
	}
}

// maxPinDirMounts bounds the unmounts of a pin dir (mounts may be stacked).
const maxPinDirMounts = 16

// removeLoopbackCache removes the result cache entries of containerd's
// built-in loopback network for the sandboxes of this CNI (their names carry
// no network of ours).
func (c *CNI) removeLoopbackCache() {
	calls, _ := c.Calls()
	for _, k := range calls {
		if k.Plugin == "loopback" && k.ContainerID != "" && !strings.ContainsAny(k.ContainerID, "/.") {
			os.Remove(filepath.Join(resultCacheDir, "cni-loopback-"+k.ContainerID+"-lo"))
		}
	}
}

// Entries reads leakguard's state dir through the store's read-only view:
// live records and tombstones (nothing is moved or removed).
func (c *CNI) Entries(t testing.TB) ([]store.Entry, []store.Entry) {
	t.Helper()
	st, err := store.OpenReadOnly(c.StateDir)
	if err != nil {
		t.Fatalf("open leakguard state dir: %v", err)
	}
	records, tombstones, problems := st.Entries()
	for _, p := range problems {
		t.Errorf("leakguard state dir: %v", p)
	}
	return records, tombstones
}
