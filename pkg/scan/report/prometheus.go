package report

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/leakguard/leakguard/pkg/scan/leakscan"
)

// metrics builds a text exposition (format 0.0.4) one family at a time.
type metrics struct{ b bytes.Buffer }

func (m *metrics) family(name, help string) {
	fmt.Fprintf(&m.b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
}

// sample writes name{labels} value; labels are name/value pairs.
func (m *metrics) sample(name string, v float64, labels ...string) {
	m.b.WriteString(name)
	if len(labels) > 0 {
		m.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				m.b.WriteByte(',')
			}
			fmt.Fprintf(&m.b, "%s=\"%s\"", labels[i], escapeLabel(labels[i+1]))
		}
		m.b.WriteByte('}')
	}
	m.b.WriteByte(' ')
	m.b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	m.b.WriteByte('\n')
}

// gauge writes a family of one unlabelled sample.
func (m *metrics) gauge(name, help string, v float64) {
	m.family(name, help)
	m.sample(name, v)
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Prometheus renders a scan as node_exporter textfile metrics. The metric
// names and labels are stable:
//
//	leakguard_scan_success                    1 (see PrometheusFailure)
//	leakguard_scan_timestamp_seconds          when the scan finished
//	leakguard_scan_duration_seconds           its wall time
//	leakguard_reachable_netns                 namespaces reachable from userspace
//	leakguard_leaked_netns                    leaked namespaces behind host links
//	leakguard_leaked_host_links{owned}        leaked host links, owned by leakguard or not
//	leakguard_leaked_host_link{name,ifindex,kind,mac,nsid,owner,owner_kind,gss_proxy_armed} 1 per leaked host link
//	leakguard_gss_proxy_armed_netns           leaked namespaces whose owner saw gss-proxy armed
//	leakguard_slab_estimate_available         1 when the slab estimate below is present
//	leakguard_slab_net_namespace_active_objects
//	leakguard_slab_leaked_netns_estimate      active objects minus reachable namespaces (upper bound)
//	leakguard_slab_leaked_netns_lower_bound   the same minus the capacity of per-CPU slabs
//	leakguard_unreadable_processes            processes the scan could not inspect
func Prometheus(r *leakscan.Report) []byte {
	var m metrics
	m.gauge("leakguard_scan_success", "Whether the last leakguard scan completed.", 1)
	m.gauge("leakguard_scan_timestamp_seconds", "Unix time the last leakguard scan finished.", float64(r.Time.UnixNano())/1e9)
	m.gauge("leakguard_scan_duration_seconds", "Wall time of the last leakguard scan, re-check delay included.", r.DurationSeconds)
	m.gauge("leakguard_reachable_netns", "Network namespaces reachable from userspace (process, thread, nsfs mount or fd).", float64(r.ReachableNetns))
	m.gauge("leakguard_leaked_netns", "Network namespaces that host links point into but nothing in userspace reaches.", float64(r.LeakedNetns))

	owned := 0
	armed := map[int]bool{}
	for _, l := range r.Leaks {
		if l.Owner != nil {
			owned++
		}
		if l.GSSProxyArmed {
			armed[l.NSID] = true
		}
	}
	m.family("leakguard_leaked_host_links", "Host links pointing into leaked network namespaces, by whether a leakguard record or tombstone owns them.")
	m.sample("leakguard_leaked_host_links", float64(owned), "owned", "true")
	m.sample("leakguard_leaked_host_links", float64(len(r.Leaks)-owned), "owned", "false")

	m.family("leakguard_leaked_host_link", "One leaked host link (always 1); owner is network/containerID/ifname, empty when unrecorded.")
	for _, l := range r.Leaks {
		ownerKind := ""
		if l.Owner != nil {
			ownerKind = l.Owner.Kind
		}
		m.sample("leakguard_leaked_host_link", 1,
			"name", l.HostLink, "ifindex", strconv.Itoa(l.Ifindex), "kind", l.Kind, "mac", l.MAC,
			"nsid", strconv.Itoa(l.NSID), "owner", l.Owner.String(), "owner_kind", ownerKind,
			"gss_proxy_armed", strconv.FormatBool(l.GSSProxyArmed))
	}
	m.gauge("leakguard_gss_proxy_armed_netns", "Leaked network namespaces whose leakguard record saw gss-proxy armed (auth_rpcgss leak).", float64(len(armed)))

	m.gauge("leakguard_slab_estimate_available", "Whether /proc/slabinfo gave a net_namespace count.", b2f(r.Slab.Available))
	if r.Slab.Available {
		m.gauge("leakguard_slab_net_namespace_active_objects", "Active objects of the net_namespace slab cache.", float64(r.Slab.ActiveObjects))
		m.gauge("leakguard_slab_leaked_netns_estimate", "net_namespace active slab objects minus reachable namespaces (upper bound).", float64(r.Slab.Leaked))
		m.gauge("leakguard_slab_leaked_netns_lower_bound", "leakguard_slab_leaked_netns_estimate minus the capacity of per-CPU slabs.", float64(r.Slab.LeakedLowerBound))
	}
	m.gauge("leakguard_unreadable_processes", "Processes the scan could not inspect (their namespaces count as unreachable).", float64(len(r.UnreadableProcesses)))
	return m.b.Bytes()
}

// PrometheusFailure renders the metrics of a scan that failed, so that an
// alert can fire on leakguard_scan_success == 0.
func PrometheusFailure(now time.Time) []byte {
	var m metrics
	m.gauge("leakguard_scan_success", "Whether the last leakguard scan completed.", 0)
	m.gauge("leakguard_scan_timestamp_seconds", "Unix time the last leakguard scan finished.", float64(now.UnixNano())/1e9)
	return m.b.Bytes()
}

// WriteFileAtomic replaces path with data: a temp file in the same dir
// (named so that node_exporter's *.prom glob skips it), fsync, rename.
// Readers see the old or the new content, never a partial file.
func WriteFileAtomic(path string, data []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temp file for %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return nil
}
