package agent

import (
	"errors"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leakguard/leakguard/pkg/hook/nristate"
	"github.com/leakguard/leakguard/pkg/install"
)

// The metrics, all named per the Prometheus naming guide: one leakguard_
// prefix, base units, _total on counters. They are computed at scrape time
// from the last round's figures (and, for the chain and NRI, from the
// installer's status or the files on the node), so a scrape never scans.
var (
	descLeakedNetns = prometheus.NewDesc("leakguard_leaked_netns",
		"Network namespaces that host links point into but nothing in userspace reaches (last scan).", nil, nil)
	descLeakedLinks = prometheus.NewDesc("leakguard_leaked_host_links",
		"Host links pointing into leaked network namespaces, by whether a leakguard record or tombstone owns them (last scan).", []string{"owned"}, nil)
	descReachable = prometheus.NewDesc("leakguard_reachable_netns",
		"Network namespaces reachable from userspace: a process, thread, nsfs mount or open fd (last scan).", nil, nil)
	descArmedLeaked = prometheus.NewDesc("leakguard_gss_proxy_armed_netns",
		"Leaked network namespaces whose leakguard record saw gss-proxy armed (last scan).", nil, nil)
	descDoomed = prometheus.NewDesc("leakguard_doomed_netns",
		"Network namespaces leakguard's records and tombstones saw gss-proxy arm (auth_rpcgss): the kernel never frees them.", nil, nil)
	descSlabEstimate = prometheus.NewDesc("leakguard_slab_leaked_netns_estimate",
		"net_namespace active slab objects minus reachable namespaces, an upper bound of leaked namespaces, links or not (last scan; absent without /proc/slabinfo).", nil, nil)
	descSlabLower = prometheus.NewDesc("leakguard_slab_leaked_netns_lower_bound",
		"leakguard_slab_leaked_netns_estimate minus the capacity of per-CPU slabs (last scan).", nil, nil)
	descUnreadable = prometheus.NewDesc("leakguard_unreadable_processes",
		"Processes the last scan could not inspect: a netns held only by them counts as leaked.", nil, nil)
	descDiscarded = prometheus.NewDesc("leakguard_discarded_state_files",
		"Record and tombstone files no reader uses (corrupt, another boot's, too large, not regular), last scan.", nil, nil)
	descScanDuration = prometheus.NewDesc("leakguard_scan_duration_seconds",
		"Wall time of the last successful scan, re-check delay included.", nil, nil)
	descScanTime = prometheus.NewDesc("leakguard_scan_timestamp_seconds",
		"Unix time the last successful scan finished.", nil, nil)
	descScanSuccess = prometheus.NewDesc("leakguard_scan_success",
		"Whether the last scan succeeded.", nil, nil)
	descScans = prometheus.NewDesc("leakguard_scans_total",
		"Scans run.", nil, nil)
	descScanErrors = prometheus.NewDesc("leakguard_scan_errors_total",
		"Scans that failed.", nil, nil)
	descReaped = prometheus.NewDesc("leakguard_reaped_total",
		"Things the agent removed: kind host_link (leaked host links a record owned, --reap owned), attachment (stale records reaped by --gc).", []string{"kind"}, nil)
	descReapErrors = prometheus.NewDesc("leakguard_reap_errors_total",
		"Reap (kind host_link) and GC (kind attachment) rounds that reported errors.", []string{"kind"}, nil)
	descChain = prometheus.NewDesc("leakguard_chain_installed",
		"Whether the CNI config runtimes load runs leakguard and its binary is in place.", nil, nil)
	descReinsertions = prometheus.NewDesc("leakguard_chain_reinsertions_total",
		"Times the installer put leakguard's entry back after the primary's file was rewritten without it.", nil, nil)
	descNRI = prometheus.NewDesc("leakguard_nri_connected",
		"Whether leakguard-nri is registered with the runtime (from its state file; 0 when the file is stale).", nil, nil)
	descBuild = prometheus.NewDesc("leakguard_build_info",
		"Always 1; labels say which build runs.", []string{"version", "revision", "goversion"}, nil)
)

// Describe implements prometheus.Collector.
func (a *Agent) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descLeakedNetns, descLeakedLinks, descReachable, descArmedLeaked, descDoomed,
		descSlabEstimate, descSlabLower, descUnreadable, descDiscarded,
		descScanDuration, descScanTime, descScanSuccess, descScans, descScanErrors,
		descReaped, descReapErrors, descChain, descReinsertions, descNRI, descBuild,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (a *Agent) Collect(ch chan<- prometheus.Metric) {
	a.mu.Lock()
	f, c, scanned := a.last, a.counters, !a.finished.IsZero()
	a.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	if !f.at.IsZero() {
		gauge(descLeakedNetns, float64(f.leakedNetns))
		gauge(descLeakedLinks, float64(f.ownedLinks), "true")
		gauge(descLeakedLinks, float64(f.orphanLinks), "false")
		gauge(descReachable, float64(f.reachable))
		gauge(descArmedLeaked, float64(f.gssArmedLeaked))
		gauge(descDoomed, float64(f.doomed))
		if f.slabAvailable {
			gauge(descSlabEstimate, float64(f.slabEstimate))
			gauge(descSlabLower, float64(f.slabLower))
		}
		gauge(descUnreadable, float64(f.unreadable))
		gauge(descDiscarded, float64(f.discardedFiles))
		gauge(descScanDuration, f.duration)
		gauge(descScanTime, float64(f.at.UnixNano())/1e9)
	}
	if scanned {
		gauge(descScanSuccess, b2f(f.ok))
	}
	counter(descScans, c.scans)
	counter(descScanErrors, c.scanErrors)
	counter(descReaped, c.reapedLinks, "host_link")
	counter(descReaped, c.reapedGC, "attachment")
	counter(descReapErrors, c.reapErrors, "host_link")
	counter(descReapErrors, c.gcErrors, "attachment")
	if in := a.opts.Installer; in != nil {
		st := in.Status()
		gauge(descChain, b2f(st.Installed))
		counter(descReinsertions, st.Reinsertions)
	} else if a.opts.ConfDir != "" {
		installed, _ := a.chainInstalled()
		gauge(descChain, b2f(installed))
	}
	if a.opts.NRIState != "" {
		s, err := nristate.Read(a.opts.NRIState)
		switch {
		case err == nil:
			gauge(descNRI, b2f(s.ConnectedAt(time.Now())))
		case errors.Is(err, nristate.ErrNoState):
			// leakguard-nri is not used on this node: no series.
		default:
			gauge(descNRI, 0)
		}
	}
	version, revision := buildInfo()
	gauge(descBuild, 1, version, revision, runtime.Version())
}

// chainInstalled inspects the conf dir read-only.
func (a *Agent) chainInstalled() (bool, string) {
	file, ok, err := install.Check(a.opts.ConfDir, a.opts.BinDir, "")
	if err != nil {
		return false, err.Error()
	}
	if !ok {
		return false, "runtimes load " + file + ", which does not run leakguard"
	}
	return true, "leakguard is in the chain (" + file + ")"
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// buildInfo is the module version and VCS revision the binary was built
// from ("unknown" when not recorded).
func buildInfo() (string, string) {
	version, revision := "unknown", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, revision
	}
	if v := bi.Main.Version; v != "" {
		version = v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			revision = s.Value
		}
	}
	return version, revision
}
