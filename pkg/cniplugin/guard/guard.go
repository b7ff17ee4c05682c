// Package guard implements leakguard's CNI verbs. Each verb reads top to
// bottom: parse the config, take the attachment's lock, then classify the
// netns (nsident), load the record (store), verify and reap host links
// (podlink), and forget.
package guard

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/pluginconf"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/rescue"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/logging"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/netns/nsreach"
)

// DefaultLockTimeout bounds the wait for another invocation on the same
// attachment; past it the verb fails with "try again later" (code 11).
const DefaultLockTimeout = 10 * time.Second

// Plugin carries what the verbs need from their environment. It has no
// mutable state: one value serves any number of invocations.
type Plugin struct {
	LockTimeout time.Duration
	Stderr      io.Writer
	// Reach builds a view of which netns are reachable from userspace,
	// ignoring pins under pinDir. Nil: GC without a list reaps nothing.
	Reach func(pinDir string, log *slog.Logger) (Reachability, error)
	// Classify tells, inside the pod netns at ADD, devices moved into the
	// pod (returned to the host at rescue) from virtual ones (deleted).
	Classify func(netlink.Link) (moved bool, hostName string)
	// Exec runs delegates (wrapper mode); nil is a real exec through
	// libcni's pkg/invoke.
	Exec invoke.Exec
	// GSSFlagPath is read from a thread inside a pod netns to tell whether
	// gss-proxy armed it; empty is rescue.DefaultGSSFlagPath (tests point it
	// at a file of their own).
	GSSFlagPath string
	// GCReaped, when set, is told of each attachment GC reaps (the node
	// agent counts them for its metrics).
	GCReaped func(record.Key)
}

// New returns a Plugin with production settings.
func New(stderr io.Writer) *Plugin {
	return &Plugin{LockTimeout: DefaultLockTimeout, Stderr: stderr, Reach: reachable, Classify: rescue.Classify}
}

// reachable is the production reachability view: every netns a process,
// thread, nsfs mount or open fd holds, not counting leakguard's own pins.
// A process whose namespaces even root may not read (an LSM or a
// non-dumpable supervisor, e.g. a VM's init) is logged and skipped: an
// attachment is judged orphaned only when, in addition, the runtime's path
// no longer holds its netns and every link still proves to be its own.
func reachable(pinDir string, log *slog.Logger) (Reachability, error) {
	walk := func() (nsreach.Set, error) {
		return nsreach.Reachable(nsreach.Options{
			IgnoreMountsUnder: []string{pinDir},
			Unreadable: func(pid int, err error) {
				log.Debug("process not inspectable; its netns is not counted", "pid", pid, "err", err)
			},
		})
	}
	set, err := walk()
	if err != nil {
		return nil, err
	}
	return &reachView{set: set, walk: walk}, nil
}

// nsidAttempts bounds the walks NSIDReachable makes while namespaces churn.
const nsidAttempts = 4

// reachView answers reachability by identity, and by host nsid (resolved
// once, on first use).
type reachView struct {
	set   nsreach.Set
	walk  func() (nsreach.Set, error)
	nsids map[int]nsident.Identity
}

func (r *reachView) Reachable(id nsident.Identity) bool { return r.set.Reachable(id) }

// NSIDReachable needs every reachable netns resolved to its nsid: one that
// vanished between the walk and its resolution might be the one asked
// about, reached in a way the walk did not see. Namespaces of other pods
// come and go all the time on a busy node, so those are looked for again in
// a fresh walk: found there, they are resolved through their new
// references; absent, nothing reaches them any more. Namespaces that only
// the fresh walk sees are not waited for: as for any walk, what became
// reachable since does not count.
func (r *reachView) NSIDReachable(nsid int) (bool, error) {
	if r.nsids == nil {
		m, err := r.resolve()
		if err != nil {
			return false, err
		}
		r.nsids = m
	}
	_, ok := r.nsids[nsid]
	return ok, nil
}

func (r *reachView) resolve() (map[int]nsident.Identity, error) {
	nsids, pending, err := nsreach.Resolve(r.set)
	if err != nil {
		return nil, err
	}
	for attempt := 1; len(pending) > 0; attempt++ {
		if attempt == nsidAttempts || r.walk == nil {
			// Any nsid might be one of them: none can be proved
			// unreachable now.
			return nil, fmt.Errorf("%d reachable netns vanished while being resolved (%d walks)", len(pending), attempt)
		}
		fresh, err := r.walk()
		if err != nil {
			return nil, err
		}
		again := nsreach.Set{}
		for _, id := range pending {
			if ref, ok := fresh[id]; ok {
				again[id] = ref
			}
		}
		m, left, err := nsreach.Resolve(again)
		if err != nil {
			return nil, err
		}
		for n, id := range m {
			nsids[n] = id
		}
		pending = left
	}
	return nsids, nil
}

// invocation is one verb's parsed input and logger.
type invocation struct {
	conf     *pluginconf.Config
	key      record.Key
	log      *slog.Logger
	closeLog func()
}

// run is the prologue and epilogue every verb shares: parse the config
// (leniently for DEL), open the log, run the verb, log its returned error
// once, close the log. A verb logs what it worked around itself; what it
// returns is logged here and nowhere else.
func (p *Plugin) run(verb string, args *skel.CmdArgs, body func(*invocation, *skel.CmdArgs) error) error {
	inv, err := p.parse(verb, args)
	if err != nil {
		// No usable config, so no log file: the runtime captures stderr.
		slog.New(slog.NewTextHandler(p.Stderr, nil)).Error("leakguard "+verb+" failed", "containerID", args.ContainerID, "err", err)
		return err
	}
	defer inv.closeLog()
	err = body(inv, args)
	switch {
	case err == nil:
	case isTryAgain(err):
		inv.log.Warn(verb+" deferred: try again later", "err", err)
	default:
		inv.log.Error(verb+" failed", "err", err)
	}
	return err
}

// parse reads the config: strictly for every verb but DEL, which must not
// fail on a config edited since ADD or on a prevResult it does not need; what
// DEL worked around is logged (at error level when it may miss the state).
func (p *Plugin) parse(verb string, args *skel.CmdArgs) (*invocation, error) {
	if verb != "DEL" {
		conf, err := pluginconf.Parse(args.StdinData)
		if err != nil {
			return nil, err
		}
		return p.begin(verb, args, conf), nil
	}
	conf, problems := pluginconf.ParseForDel(args.StdinData)
	if conf == nil {
		return nil, types.NewError(types.ErrDecodingFailure, "network configuration cannot be decoded", errors.Join(problems...).Error())
	}
	inv := p.begin(verb, args, conf)
	for _, e := range problems {
		var fe *pluginconf.FieldError
		if errors.As(e, &fe) && fe.Severe {
			inv.log.Error("config field unusable; its default may miss this attachment's state", "err", e)
			continue
		}
		inv.log.Warn("config problem worked around", "err", e)
	}
	return inv, nil
}

// begin opens the verb's logger. Each key is logged once per line: the
// attachment keys only when the verb has them (GC and STATUS do not; GC adds
// them per attachment).
func (p *Plugin) begin(verb string, args *skel.CmdArgs, conf *pluginconf.Config) *invocation {
	level, _ := conf.Level() // validated by the parse
	log, closeLog := logging.New(conf.LogFile, level, p.Stderr)
	key := record.Key{Network: conf.Name, ContainerID: args.ContainerID, IfName: args.IfName}
	attrs := []any{"cmd", verb, "network", key.Network}
	if key.ContainerID != "" {
		attrs = append(attrs, "containerID", key.ContainerID)
	}
	if key.IfName != "" {
		attrs = append(attrs, "ifname", key.IfName)
	}
	return &invocation{conf: conf, key: key, log: log.With(attrs...), closeLog: closeLog}
}

// lock opens the store and takes the attachment's lock; a timeout becomes
// CNI error 11 so that the runtime retries.
func (p *Plugin) lock(inv *invocation) (*store.Store, *store.Lock, error) {
	st, err := store.Open(inv.conf.StateDir)
	if err != nil {
		return nil, nil, fmt.Errorf("open state dir %s: %w", inv.conf.StateDir, err)
	}
	l, err := st.Lock(inv.key, p.LockTimeout)
	if errors.Is(err, store.ErrLockTimeout) {
		return nil, nil, types.NewError(types.ErrTryAgainLater, "another invocation holds this attachment", err.Error())
	}
	if err != nil {
		return nil, nil, err
	}
	return st, l, nil
}

func isTryAgain(err error) bool {
	var e *types.Error
	return errors.As(err, &e) && e.Code == types.ErrTryAgainLater
}
