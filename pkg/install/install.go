// Package install puts leakguard into a node's CNI chain and keeps it there:
// it copies the binaries into place atomically, appends leakguard's entry to
// the primary network's config (the one the runtime uses), and, watching the
// conf dir, puts it back whenever the primary's agent rewrites its file.
// Uninstall removes the entry first, then the binaries: an entry whose binary
// is gone fails every pod's DEL.
//
// One reconcile pass (Reconcile) reads top to bottom: binaries → pick the
// primary → edit its raw JSON → check the result loads with libcni → write it
// atomically → see what the runtime now loads.
package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/hook/hookpolicy"
)

// Defaults of Options.
const (
	DefaultConfDir = "/etc/cni/net.d"
	DefaultBinDir  = "/opt/cni/bin"
	// DefaultOwnFile sorts before the usual NN-name primaries (05-cilium,
	// 10-calico, 10-aws, ...), so runtimes load it first.
	DefaultOwnFile = "00-leakguard.conflist"
	// DefaultResync is the backstop re-check, in case a change was missed
	// (a lost inotify watch): cheap, a few small files read and parsed.
	DefaultResync = 10 * time.Second
	// DefaultRevertBurst and DefaultRevertInterval limit re-insertions into
	// one file: a burst, then one per interval, so that leakguard and an
	// agent that keeps dropping its entry do not rewrite the file in a loop.
	DefaultRevertBurst    = 5
	DefaultRevertInterval = 10 * time.Second
	// DefaultDrain is how long uninstall leaves leakguard's binary after
	// removing its entry: a runtime that loaded the chain just before runs
	// leakguard after the main plugin (a DEL that finds no binary fails).
	DefaultDrain = 2 * time.Second
)

// Options configure an Installer.
type Options struct {
	// ConfDir is the runtime's CNI conf dir; BinDir its CNI bin dir.
	ConfDir, BinDir string
	// From holds the binaries to install (leakguard, leakguard-hook,
	// leakguard-nri).
	From string
	// Primary names the primary network's file; "" picks it as runtimes do.
	Primary string
	// OwnFile, when set, names leakguard's own copy of the primary (with
	// leakguard appended), kept in sync with it; the primary is not edited.
	// It must sort before the primary.
	OwnFile string
	// Entry is leakguard's entry (ParseEntry); the zero value is
	// {"type":"leakguard"}.
	Entry Entry
	// HookDir, when set, receives leakguard-hook; NRIDir leakguard-nri, as
	// NRIName (default leakguard-nri; containerd's plugin_path wants
	// NN-name).
	HookDir, NRIDir, NRIName string
	// HookPolicy, when set (with HookDir), is a leakguard-hook policy file
	// (e.g. a ConfigMap's) installed as HookDir/HookPolicyFile, mode 0644;
	// one the hook would refuse is not installed (the pass fails).
	HookPolicy string
	// Resync is the backstop re-check interval of Run (DefaultResync).
	Resync time.Duration
	// RevertBurst and RevertInterval rate-limit re-insertions into a file
	// (DefaultRevertBurst, DefaultRevertInterval).
	RevertBurst    int
	RevertInterval time.Duration
	// Drain is the time Uninstall waits between removing the entry and
	// removing leakguard's binary (DefaultDrain is what leakguardctl
	// uses); 0 does not wait.
	Drain time.Duration
	// Log receives what the installer does; nil discards it.
	Log *slog.Logger
}

// Status is what the installer last saw. Installed means runtimes will run
// leakguard for the next pod: the config they load (the first loadable file,
// or Primary when set) runs leakguard, and its binary is in place.
type Status struct {
	Installed bool
	// File holds leakguard's entry (the primary, or OwnFile); Primary is
	// the primary network's file.
	File, Primary string
	// Writes counts config writes; Reinsertions those that put back an
	// entry someone else had removed.
	Writes, Reinsertions uint64
	// Err is the last pass's problem ("" when it succeeded).
	Err string
	// Checked is when the last pass ran.
	Checked time.Time
}

// Installer installs leakguard and keeps it installed. Its methods are safe
// for concurrent use; passes are serialised.
type Installer struct {
	opts Options
	log  *slog.Logger

	pass sync.Mutex // one pass at a time
	bins *binaries
	// primary is the file chosen last time: once chosen, a primary that
	// stops parsing is left alone rather than swapped for the next file.
	primary string
	// written is the hash of our last write of each file: a file that
	// still has it is our own write, not a change to react to.
	written map[string][32]byte
	// holding: files seen holding our entry, so a later write is a
	// re-insertion.
	holding map[string]bool
	limits  map[string]*revertLimit
	// skipped remembers the unloadable files logged (name → content hash
	// and error), so each is logged once until it changes.
	skipped map[string]string
	lastErr string

	mu     sync.Mutex
	status Status
}

// New checks opts and returns an Installer.
func New(opts Options) (*Installer, error) {
	if opts.ConfDir == "" {
		opts.ConfDir = DefaultConfDir
	}
	if opts.BinDir == "" {
		opts.BinDir = DefaultBinDir
	}
	if opts.From == "" {
		return nil, errors.New("no dir to install binaries from")
	}
	if opts.HookPolicy != "" && opts.HookDir == "" {
		return nil, errors.New("a hook policy needs the hook dir it goes into")
	}
	for _, d := range []*string{&opts.ConfDir, &opts.BinDir, &opts.From, &opts.HookDir, &opts.NRIDir, &opts.HookPolicy} {
		if *d != "" && !filepath.IsAbs(*d) {
			return nil, fmt.Errorf("%q must be an absolute path", *d)
		}
		if *d != "" {
			*d = filepath.Clean(*d) // events name files by dir + name
		}
	}
	for _, n := range []string{opts.Primary, opts.OwnFile, opts.NRIName} {
		if n != "" && (strings.ContainsRune(n, '/') || n == "." || n == ".." || strings.HasPrefix(n, tempPrefix)) {
			return nil, fmt.Errorf("%q must be a plain file name", n)
		}
	}
	if opts.Primary != "" && !hasConfExt(opts.Primary) {
		return nil, fmt.Errorf("primary %q: runtimes load only %s files", opts.Primary, strings.Join(confExts, ", "))
	}
	if opts.OwnFile != "" && !strings.HasSuffix(opts.OwnFile, ".conflist") {
		return nil, fmt.Errorf("own file %q must be a .conflist", opts.OwnFile)
	}
	if opts.OwnFile != "" && opts.OwnFile == opts.Primary {
		return nil, fmt.Errorf("own file and primary are both %q", opts.OwnFile)
	}
	if opts.NRIName == "" {
		opts.NRIName = NRIBinary
	}
	if opts.Resync <= 0 {
		opts.Resync = DefaultResync
	}
	if opts.RevertBurst <= 0 {
		opts.RevertBurst = DefaultRevertBurst
	}
	if opts.RevertInterval <= 0 {
		opts.RevertInterval = DefaultRevertInterval
	}
	if len(opts.Entry.obj) == 0 {
		opts.Entry, _ = ParseEntry("")
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Installer{
		opts: opts, log: log, bins: newBinaries(),
		written: map[string][32]byte{}, holding: map[string]bool{},
		limits: map[string]*revertLimit{}, skipped: map[string]string{},
	}, nil
}

func hasConfExt(name string) bool {
	for _, e := range confExts {
		if filepath.Ext(name) == e {
			return true
		}
	}
	return false
}

// Status returns what the last pass saw.
func (in *Installer) Status() Status {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.status
}

func (in *Installer) update(f func(*Status)) {
	in.mu.Lock()
	f(&in.status)
	in.mu.Unlock()
}

// binaries lists what to install: leakguard always, the hook and the NRI
// plugin when their dirs are given.
func (in *Installer) binaries() []binary {
	bs := []binary{{Src: filepath.Join(in.opts.From, PluginType), Dir: in.opts.BinDir, Name: PluginType}}
	if in.opts.HookDir != "" {
		bs = append(bs, binary{Src: filepath.Join(in.opts.From, HookBinary), Dir: in.opts.HookDir, Name: HookBinary, MakeDir: true})
	}
	if in.opts.HookPolicy != "" {
		// After the hook: uninstall removes it after the hook that reads it.
		bs = append(bs, binary{Src: in.opts.HookPolicy, Dir: in.opts.HookDir, Name: HookPolicyFile, MakeDir: true,
			Mode: policyMode, Check: checkPolicy})
	}
	if in.opts.NRIDir != "" {
		bs = append(bs, binary{Src: filepath.Join(in.opts.From, NRIBinary), Dir: in.opts.NRIDir, Name: in.opts.NRIName})
	}
	return bs
}

// checkPolicy refuses a policy the hook would refuse (it would then run
// with its defaults and log the error at every container).
func checkPolicy(src string) error {
	_, err := hookpolicy.Load(src)
	return err
}

// waitError is a condition the installer waits out (a dir or primary that
// does not exist yet); it is reported, not alarming.
type waitError struct{ msg string }

func (e *waitError) Error() string { return e.msg }

// Waiting tells whether err is a wait for something to appear rather than
// a failure.
func Waiting(err error) bool {
	var w *waitError
	return errors.As(err, &w) || errors.Is(err, errNoDir)
}

// limitError: a re-insertion into File is held back by the rate limit.
type limitError struct {
	File  string
	After time.Duration
}

func (e *limitError) Error() string {
	return fmt.Sprintf("%s keeps losing leakguard's entry: next re-insertion in %v", e.File, e.After.Round(time.Millisecond))
}

// Reconcile runs one pass: binaries first (an entry must never name a
// binary that is not there), then the config. It returns the pass's
// problem, also kept in Status.
func (in *Installer) Reconcile() error {
	in.pass.Lock()
	defer in.pass.Unlock()
	err := in.reconcile()
	in.report(err)
	return err
}

// AdoptStateDir makes the entry's state dir private when it is the empty
// 0755 dir a hostPath volume creates (store.Adopt). Every pass does it
// before the entry goes in (the plugin would refuse every ADD); an agent
// in the same process calls it before its first scan, which would refuse
// the dir too.
func (in *Installer) AdoptStateDir() error {
	dir := in.opts.Entry.Config().StateDir
	if dir == "" {
		return nil
	}
	adopted, err := store.Adopt(dir)
	if err != nil {
		return err
	}
	if adopted {
		in.log.Info("made the state dir private (0700): it was an empty dir, as a hostPath volume creates it", "path", dir)
	}
	return nil
}

// checkStateDir refuses a state dir the plugin's store would refuse; a
// missing one is fine (the plugin creates it).
func (in *Installer) checkStateDir() error {
	dir := in.opts.Entry.Config().StateDir
	if dir == "" {
		return nil
	}
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := store.OpenReadOnly(dir); err != nil {
		return fmt.Errorf("the plugin would refuse every ADD: %w", err)
	}
	return nil
}

func (in *Installer) reconcile() error {
	if err := in.AdoptStateDir(); err != nil {
		return err
	}
	for _, b := range in.binaries() {
		wrote, err := in.bins.ensure(b)
		if err != nil {
			return fmt.Errorf("install %s: %w", b.dst(), err)
		}
		if wrote {
			in.log.Info("installed binary", "path", b.dst())
		}
	}
	// After the binaries (an entry already in place needs its binary for
	// DEL), before the entry: one whose state dir the plugin refuses fails
	// every pod's ADD.
	if err := in.checkStateDir(); err != nil {
		return err
	}
	dir := in.opts.ConfDir
	if err := checkDir(dir); err != nil {
		return err
	}
	names, err := listConfs(dir)
	if err != nil {
		return err
	}
	src, err := in.pickPrimary(names)
	if err != nil {
		var w *waitError
		if errors.As(err, &w) && in.opts.OwnFile != "" {
			if derr := in.dropOwnFile(names); derr != nil {
				return derr
			}
		}
		return err
	}
	if err := in.apply(src); err != nil {
		return err
	}
	return in.observe(src)
}

// pickPrimary chooses the primary network's file as runtimes do: the first
// file in name order that loads, skipping leakguard's own file and chains
// with no main plugin; Primary overrides. A chosen primary that stops
// loading (an agent rewriting it, a half-written file) is left alone and
// retried on the next change, never swapped for another network's file.
func (in *Installer) pickPrimary(names []string) (*confFile, error) {
	dir := in.opts.ConfDir
	if p := in.opts.Primary; p != "" {
		name := p
		if !contains(names, name) {
			// Our own conversion of a .conf (or .json) primary.
			if alt := conflistOf(p); alt != p && contains(names, alt) {
				name = alt
			} else {
				return nil, &waitError{fmt.Sprintf("primary %s does not exist yet in %s", p, dir)}
			}
		}
		f := readConf(dir, name)
		if f.Err != nil {
			return nil, fmt.Errorf("primary %s cannot be loaded, left alone until it changes: %w", name, f.Err)
		}
		return f, nil
	}
	for _, n := range names {
		if n == in.opts.OwnFile {
			continue
		}
		f := readConf(dir, n)
		if errors.Is(f.Err, errTooBig) {
			// Sorting first, it is what runtimes load: leakguard in a
			// later file would not run.
			return nil, fmt.Errorf("%s sorts first and runtimes may load it, but leakguard does not edit a config that large: %w", n, f.Err)
		}
		if f.Err != nil {
			if n == in.primary {
				return nil, fmt.Errorf("primary %s cannot be loaded, left alone until it changes: %w", n, f.Err)
			}
			if why := fmt.Sprintf("%x %v", f.Sum, f.Err); in.skipped[n] != why {
				in.skipped[n] = why
				in.log.Warn("config file skipped: it does not load (containerd, which loads only the first file, fails while it sorts first)", "file", n, "err", f.Err)
			}
			continue
		}
		delete(in.skipped, n)
		if f.leakguardOnly() {
			continue
		}
		if in.primary != n {
			in.log.Info("primary network config", "file", n)
			in.primary = n
		}
		return f, nil
	}
	return nil, &waitError{fmt.Sprintf("no primary network config in %s yet", dir)}
}

func contains(names []string, n string) bool {
	for _, x := range names {
		if x == n {
			return true
		}
	}
	return false
}

// conflistOf is the name a .conf or .json config gets as a conflist.
func conflistOf(name string) string {
	if ext := filepath.Ext(name); ext == ".conf" || ext == ".json" {
		return strings.TrimSuffix(name, ext) + ".conflist"
	}
	return name
}

// apply writes leakguard's entry where it belongs: into the primary (a
// .conf or .json becomes a .conflist of the same stem, name and cniVersion),
// or into OwnFile as a copy of the primary.
func (in *Installer) apply(src *confFile) error {
	dir := in.opts.ConfDir
	list, changed, err := withEntry(src.List, in.opts.Entry)
	if errors.Is(err, errWrapped) {
		return nil // leakguard is in the chain already, as the operator put it
	}
	if err != nil {
		return fmt.Errorf("primary %s: %w", src.Name, err)
	}
	target := conflistOf(src.Name)
	if in.opts.OwnFile != "" {
		target = in.opts.OwnFile
		if target > src.Name {
			return fmt.Errorf("own file %s sorts after the primary %s, so runtimes would not load it: choose a name that sorts first", target, src.Name)
		}
		changed = true // compared with the own file's content below
	} else if !src.IsList {
		changed = true
	}
	if !changed {
		in.holding[target] = true
		return nil
	}
	out, err := list.render()
	if err != nil {
		return err
	}
	if err := verifyChain(out, src); err != nil {
		return fmt.Errorf("refusing to write %s: %w", target, err)
	}
	cur := readConf(dir, target)
	same := cur.Err == nil && string(cur.Data) == string(out)
	if in.opts.OwnFile == "" && target != src.Name && !same && !in.converted(cur, src) {
		return fmt.Errorf("converting %s would overwrite %s, another network's config and not leakguard's earlier conversion: left alone (remove one of them, or use --primary)", src.Name, target)
	}
	// Put back after someone removed it: a file we saw holding the entry
	// was rewritten by someone else, or a .conf we converted was written
	// again (it sorts before, so shadows, our .conflist).
	reverted := in.holding[target] && ((!same && cur.Sum != in.written[target]) || (in.opts.OwnFile == "" && src.Name != target))
	if reverted {
		if err := in.allowReinsert(target); err != nil {
			return err
		}
		in.update(func(s *Status) { s.Reinsertions++ })
		in.log.Info("re-inserting leakguard's entry: the file was rewritten without it", "file", target, "primary", src.Name)
	}
	if same {
		in.written[target] = cur.Sum
		in.holding[target] = true
		return in.dropConverted(src, target)
	}
	if cur.Symlink {
		return fmt.Errorf("%s is a symlink: leakguard replaces only regular files (use an own file)", target)
	}
	mode, own := src.Mode, &owner{UID: src.UID, GID: src.GID}
	if cur.Data != nil {
		mode, own = cur.Mode, &owner{UID: cur.UID, GID: cur.GID}
	}
	if err := writeAtomic(dir, target, mode, own, func(w io.Writer) error { _, err := w.Write(out); return err }); err != nil {
		return err
	}
	in.written[target] = sha(out)
	in.holding[target] = true
	in.update(func(s *Status) { s.Writes++ })
	in.log.Info("wrote leakguard's entry", "file", target, "primary", src.Name)
	if in.opts.OwnFile == "" {
		in.primary = target
	}
	return in.dropConverted(src, target)
}

// converted tells whether cur, the .conflist a .conf or .json primary src
// converts to, may be replaced: it does not exist, it is leakguard's own
// earlier conversion (our last write, or a chain that runs leakguard), or
// it is the same network (its agent writes both forms; the .conf, sorting
// first, is the definition runtimes use). Another network's config, or one
// that does not parse, is someone else's.
func (in *Installer) converted(cur, src *confFile) bool {
	if _, err := os.Lstat(filepath.Join(in.opts.ConfDir, cur.Name)); errors.Is(err, os.ErrNotExist) {
		return true
	}
	if cur.Data != nil && cur.Sum == in.written[cur.Name] {
		return true
	}
	if cur.Err != nil {
		return false
	}
	if name, ok := networkName(cur.List); ok {
		if srcName, ok := networkName(src.List); ok && name == srcName {
			return true
		}
	}
	ps, err := plugins(cur.List)
	return err == nil && mentions(ps)
}

// networkName is a config's "name", as libcni reads it.
func networkName(list object) (string, bool) {
	v, ok := list.get("name")
	if !ok {
		return "", false
	}
	var n string
	return n, json.Unmarshal(v, &n) == nil
}

// dropOwnFile removes the own file once its primary is gone: a copy of a
// network its agent removed (an uninstall or a CNI swap, meant to make the
// node NotReady) would keep runtimes setting pods up on it. Only a file
// that runs leakguard is removed, as Uninstall does; it comes back with
// the primary.
func (in *Installer) dropOwnFile(names []string) error {
	name := in.opts.OwnFile
	if !contains(names, name) {
		return nil
	}
	if f := readConf(in.opts.ConfDir, name); f.Err != nil || !f.holds() {
		return nil
	}
	if err := os.Remove(filepath.Join(in.opts.ConfDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove own file %s, whose primary is gone: %w", name, err)
	}
	delete(in.written, name)
	delete(in.holding, name)
	in.log.Info("removed the own file: its primary is gone", "file", name)
	return syncDir(in.opts.ConfDir)
}

// dropConverted removes a .conf (or .json) primary once its .conflist is in
// place. The .conflist is written first: runtimes sort 10-x.conf before
// 10-x.conflist, so until the .conf goes they keep loading it, complete and
// as it was, and right after they load the complete .conflist; the dir never
// holds a half-written config or none. The .conf is removed only if it still
// holds what was converted: an agent's newer version is converted next pass.
func (in *Installer) dropConverted(src *confFile, target string) error {
	if in.opts.OwnFile != "" || src.IsList || target == src.Name {
		return nil
	}
	now := readConf(in.opts.ConfDir, src.Name)
	if now.Data == nil || now.Sum != src.Sum {
		return nil
	}
	if err := os.Remove(filepath.Join(in.opts.ConfDir, src.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s after converting it to %s: %w", src.Name, target, err)
	}
	in.log.Info("converted to a conflist", "from", src.Name, "to", target)
	return syncDir(in.opts.ConfDir)
}

// observe records what runtimes will load now.
func (in *Installer) observe(src *confFile) error {
	dir := in.opts.ConfDir
	file := conflistOf(src.Name)
	if in.opts.OwnFile != "" {
		file = in.opts.OwnFile
	}
	effective := file
	if in.opts.Primary == "" {
		names, err := listConfs(dir)
		if err != nil {
			return err
		}
		effective = ""
		for _, n := range names {
			if f := readConf(dir, n); f.mayLoad() {
				effective = n
				break
			}
		}
	}
	f := readConf(dir, effective)
	installed := f.Err == nil && f.holds() && present(filepath.Join(in.opts.BinDir, PluginType))
	in.update(func(s *Status) { s.Installed, s.File, s.Primary = installed, file, src.Name })
	if !installed {
		return fmt.Errorf("runtimes load %s, which does not run leakguard", effective)
	}
	return nil
}

// report keeps the pass's outcome in Status and logs it when it changes.
func (in *Installer) report(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	in.update(func(s *Status) {
		s.Err, s.Checked = msg, time.Now()
		if err != nil {
			s.Installed = false // something needed doing and could not be done
		}
	})
	if msg == in.lastErr {
		return
	}
	in.lastErr = msg
	var le *limitError
	switch {
	case err == nil:
		in.log.Info("leakguard is in the chain", "file", in.Status().File)
	case errors.As(err, &le):
		// allowReinsert logs it, at most once a minute.
	case Waiting(err):
		in.log.Info("waiting", "reason", msg)
	default:
		in.log.Error("not installed; retrying", "err", msg)
	}
}

// Check tells, changing nothing, whether runtimes loading confDir run
// leakguard for the next pod: the config they load (the first file that
// loads, or primary when set) runs it, and binDir holds its binary. file is
// that config file. A node agent in another process than the installer
// uses it for its readiness.
func Check(confDir, binDir, primary string) (string, bool, error) {
	if err := checkDir(confDir); err != nil {
		return "", false, err
	}
	names, err := listConfs(confDir)
	if err != nil {
		return "", false, err
	}
	var f *confFile
	for _, n := range names {
		if primary != "" && n != primary && n != conflistOf(primary) {
			continue
		}
		if c := readConf(confDir, n); c.mayLoad() {
			f = c
			break
		}
	}
	if f == nil {
		return "", false, &waitError{fmt.Sprintf("no loadable network config in %s", confDir)}
	}
	return f.Name, f.holds() && present(filepath.Join(binDir, PluginType)), nil
}
