// Command leakguardctl is the operator's view of leaked network namespaces
// on a node. Run it as root in the host's namespaces.
//
//	leakguardctl scan    [--state-dir DIR] [--pin-dir DIR] [--json] [--prometheus FILE] [--recheck D]
//	leakguardctl reap    [--state-dir DIR] [--pin-dir DIR] [--all-orphans] [--dry-run] [--json] [--recheck D]
//	leakguardctl records [--state-dir DIR] [--pin-dir DIR] [--json]
//	leakguardctl install [--cni-conf-dir DIR] [--cni-bin-dir DIR] [--from DIR] [--primary NAME]
//	                     [--own-file] [--plugin-config JSON] [--hook-dir DIR] [--nri-dir DIR] [--watch]
//	leakguardctl uninstall [--cni-conf-dir DIR] [--cni-bin-dir DIR] [--hook-dir DIR] [--nri-dir DIR]
//	leakguardctl serve   [--listen ADDR] [--interval D] [--reap owned] [--gc] [--install [install flags]]
//	leakguardctl gc      [--state-dir DIR] [--pin-dir DIR] [--json]
//
// scan lists host links whose link-netnsid names a netns that no process,
// thread, nsfs bind mount (in any mount namespace) or open nsfs fd reaches,
// re-checked after --recheck (default 200ms). Mounts under --pin-dir do not
// count, so a netns kept only by leakguard's own pin shows up.
// reap deletes what scan finds: by default only links a leakguard record or
// tombstone owns (verified against the recorded identity; a tombstone is
// dropped once its links are gone, a live record is kept for the DEL or GC
// that also removes its routes, rules and pin); --all-orphans also deletes
// unrecorded ones after re-verifying name, MAC, kind, link-netnsid and peer
// ifindex; --dry-run deletes nothing.
//
// JSON output (stable field names):
//
//	scan:    {time, durationSeconds, hostNetns{dev,ino}, reachableNetns, leakedNetns,
//	          leaks: [{hostLink, ifindex, mac, kind, nsid, peerIfindex,
//	                   owner: null | {network, containerID, ifName, kind: "record"|"tombstone", file},
//	                   gssProxyArmed}],
//	          slab{available, activeObjects, reachableObjects, leakedEstimate, cpuSlabObjects, leakedLowerBound, reason},
//	          unreadableProcesses?, discarded?: [<discarded>], warnings?}
//	reap:    {dryRun, results: [{<leak fields>, action: deleted|would-delete|skipped|gone|failed, reason?, stateFileRemoved?}],
//	          discarded?: [<discarded>], errors?}
//	records: {stateDir, entries: [{kind, network, containerID, ifName, file, created, tombstonedAt?, netns, netnsPath,
//	          hostLinks, ips, gssProxyArmed, pin?{path, state, reason}}], pinDir?, strayPins: [{path, netns?}],
//	          discarded: [<discarded>], warnings?}
//	<discarded>: {kind: "other-boot"|"corrupt"|"too-large"|"not-regular-file", path, reason,
//	          action: "left"|"moved-aside"|"removed", movedTo?}
//
// scan, records and reap report every record or tombstone file no reader
// uses (table: one "discarded (<kind>): <path>: <reason>; <action>" line
// each); scan and records open the state dir read-only and leave each in
// place, reap removes another boot's and moves the others aside.
//
// --prometheus writes node_exporter textfile metrics atomically (see
// pkg/report.Prometheus for the metric names).
//
// install puts leakguard into the node's CNI chain (pkg/install): binaries
// first, then the entry, appended to the primary network's config (or to
// leakguard's own copy of it with --own-file); --watch keeps it there until
// SIGTERM, which leaves everything installed. uninstall removes the entry
// first, then the binaries. serve is the node agent (pkg/scan/agent): scans
// every --interval and serves /metrics, /healthz and /readyz.
//
// Exit codes: 0 success, 1 error, 2 usage.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/leakguard/leakguard/pkg/cniplugin/pluginconf"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/scan/leakscan"
	"github.com/leakguard/leakguard/pkg/scan/report"
)

const usage = `usage: leakguardctl <command> [flags]

commands:
  scan     list host links whose peer network namespace is leaked (reachable
           by no process, thread, nsfs mount or nsfs fd)
  reap     delete the leaked host links that scan finds (by default only those
           a leakguard record or tombstone owns)
  records  list leakguard's records, tombstones and netns pins
  install  put leakguard into the node's CNI chain (--watch: keep it there)
  uninstall
           take leakguard out of the chain, then remove its binaries
  serve    the node agent: periodic scans, Prometheus /metrics, /healthz, /readyz
  gc       run leakguard's GC once: reap records whose netns is provably orphaned

Run "leakguardctl <command> -h" for the command's flags.
`

// errUsage marks errors that exit with code 2.
var errUsage = errors.New("usage")

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintf(os.Stderr, "leakguardctl: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmds := map[string]func([]string, io.Writer, io.Writer) error{
		"scan": scan, "reap": reap, "records": records,
		"install": installCmd, "uninstall": uninstallCmd, "serve": serve, "gc": gcCmd,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprint(stdout, usage)
			return nil
		}
		fmt.Fprintf(stderr, "leakguardctl: unknown command %q\n%s", args[0], usage)
		return errUsage
	}
	return cmd(args[1:], stdout, stderr)
}

// common are the flags scan and reap share.
type common struct {
	stateDir, pinDir string
	json             bool
	recheck          time.Duration
}

func newFlags(name string, stderr io.Writer, c *common) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.stateDir, "state-dir", pluginconf.DefaultStateDir, "leakguard's state dir (records and tombstones)")
	fs.BoolVar(&c.json, "json", false, "print JSON (stable field names) instead of a table")
	return fs
}

func scanFlags(fs *flag.FlagSet, c *common) {
	fs.StringVar(&c.pinDir, "pin-dir", pluginconf.DefaultPinDir, `leakguard's netns pin dir: pins there do not make a netns reachable ("" to count them)`)
	fs.DurationVar(&c.recheck, "recheck", leakscan.DefaultRecheck, "delay before candidates are checked again (netns teardown is async)")
}

// parse parses args; -h exits 0, bad flags or extra arguments exit 2.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}

var errHelp = errors.New("help")

func helpOK(err error) error {
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

// scan runs a scan; readOnly opens the state dir without ever changing it
// (scan itself), reap opens it writable to drop reaped tombstones.
func (c *common) scan(readOnly bool) (*leakscan.Report, *store.Store, error) {
	st, err := leakscan.OpenStoreIfExists(c.stateDir, readOnly)
	if err != nil {
		return nil, nil, err
	}
	opts := leakscan.Options{Store: st, Recheck: c.recheck}
	if c.pinDir != "" {
		opts.IgnoreMountsUnder = []string{c.pinDir}
	}
	if c.recheck == 0 {
		opts.Recheck = -1
	}
	rep, err := leakscan.Scan(opts)
	return rep, st, err
}

func scan(args []string, stdout, stderr io.Writer) error {
	var c common
	var prom string
	fs := newFlags("scan", stderr, &c)
	scanFlags(fs, &c)
	fs.StringVar(&prom, "prometheus", "", "also write node_exporter textfile metrics to FILE (atomically)")
	if err := parse(fs, args); err != nil {
		return helpOK(err)
	}
	rep, _, err := c.scan(true)
	if err != nil {
		if prom != "" {
			_ = report.WriteFileAtomic(prom, report.PrometheusFailure(time.Now()))
		}
		return err
	}
	if prom != "" {
		if err := report.WriteFileAtomic(prom, report.Prometheus(rep)); err != nil {
			return err
		}
	}
	if c.json {
		return report.JSON(stdout, rep)
	}
	return report.ScanTable(stdout, rep)
}

// reapOutput is reap's JSON output.
type reapOutput struct {
	DryRun    bool                  `json:"dryRun"`
	Results   []leakscan.ReapResult `json:"results"`
	Discarded []leakscan.Discarded  `json:"discarded,omitempty"`
	Errors    []string              `json:"errors,omitempty"`
}

func reap(args []string, stdout, stderr io.Writer) error {
	var c common
	var opts leakscan.ReapOptions
	fs := newFlags("reap", stderr, &c)
	scanFlags(fs, &c)
	fs.BoolVar(&opts.AllOrphans, "all-orphans", false, "also delete leaked host links that no leakguard record or tombstone owns")
	fs.BoolVar(&opts.DryRun, "dry-run", false, "print what would be deleted, delete nothing")
	if err := parse(fs, args); err != nil {
		return helpOK(err)
	}
	rep, st, err := c.scan(false)
	if err != nil {
		return err
	}
	opts.Store = st
	if n := len(rep.UnreadableProcesses); n > 0 {
		fmt.Fprintf(stderr, "leakguardctl: warning: %d process(es) could not be inspected; a netns held only by them looks leaked\n", n)
	}
	res, reapErr := leakscan.Reap(rep.Leaks, opts)
	if c.json {
		out := reapOutput{DryRun: opts.DryRun, Results: res, Discarded: rep.Discarded}
		if reapErr != nil {
			out.Errors = []string{reapErr.Error()}
		}
		if err := report.JSON(stdout, out); err != nil {
			return err
		}
	} else if err := report.ReapTable(stdout, res, rep.Discarded); err != nil {
		return err
	}
	return reapErr
}

func records(args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlags("records", stderr, &c)
	fs.StringVar(&c.pinDir, "pin-dir", pluginconf.DefaultPinDir, `leakguard's netns pin dir, searched for pins no record names ("" to skip)`)
	if err := parse(fs, args); err != nil {
		return helpOK(err)
	}
	st, err := leakscan.OpenStoreIfExists(c.stateDir, true)
	if err != nil {
		return err
	}
	s := leakscan.ListState(st, c.pinDir)
	if s.Dir == "" {
		s.Dir = c.stateDir
	}
	if c.json {
		return report.JSON(stdout, s)
	}
	return report.StateTable(stdout, s)
}
