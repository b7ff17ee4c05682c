package agent_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/hook/nristate"
	"github.com/leakguard/leakguard/pkg/install"
	"github.com/leakguard/leakguard/pkg/scan/agent"
	"github.com/leakguard/leakguard/test/nsutil"
	"github.com/leakguard/leakguard/test/scantest"
)

// node is a throw-away host: a leaked pod a leakguard record owns (gss-proxy
// seen armed), a leaked pod nobody recorded, a live recorded pod.
type node struct {
	ns       ns.NetNS
	stateDir string
	owned    *scantest.Pod
}

func newNode(t testing.TB) *node {
	t.Helper()
	n := &node{ns: nsutil.NewNS(t), stateDir: filepath.Join(t.TempDir(), "state")}
	st, err := store.Open(n.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	n.owned = scantest.NewPod(t, n.ns, "lga-owned")
	orphan := scantest.NewPod(t, n.ns, "lga-orphan")
	live := scantest.NewPod(t, n.ns, "lga-live")
	for cid, p := range map[string]*scantest.Pod{"ctr-owned": n.owned, "ctr-live": live} {
		r := &record.Record{
			Key:   record.Key{Network: "lgnet", ContainerID: cid, IfName: "eth0"},
			Netns: p.ID, HostLinks: []podlink.Identity{p.Host}, GSSProxyArmed: cid == "ctr-owned",
		}
		if err := st.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	nsutil.LeakBySocket(t, n.owned.NS)
	nsutil.LeakBySocket(t, orphan.NS)
	scantest.KeepByMountOnly(t, live.NS)
	return n
}

// do runs f in the node netns: the agent's host.
func (n *node) do(f func() error) error { return n.ns.Do(func(ns.NetNS) error { return f() }) }

// serve serves the agent's handler on a loopback port until the test ends.
func serve(t *testing.T, a *agent.Agent) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// scrape fetches /metrics and parses it; it fails on any naming-guide
// problem promlint finds in leakguard's own metrics.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	var ours []*dto.MetricFamily
	for name, mf := range mfs {
		if strings.HasPrefix(name, "leakguard_") {
			ours = append(ours, mf)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	return mfs
}

// value returns the sample of name whose labels include want, checking the
// family's type.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, typ dto.MetricType, want ...string) float64 {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("%s missing", name)
	}
	if mf.GetType() != typ {
		t.Fatalf("%s is a %v, want a %v", name, mf.GetType(), typ)
	}
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && labels[want[i]] == want[i+1]
		}
		if !match {
			continue
		}
		if typ == dto.MetricType_COUNTER {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("%s has no sample with labels %v", name, want)
	return 0
}

const (
	gauge   = dto.MetricType_GAUGE
	counter = dto.MetricType_COUNTER
)

// The agent over loopback after a simulated leak: every metric by name,
// type and value, through a scan, a reap of the owned leak, the next scan,
// and a GC that reaps the leaked pod's stale record.
func TestMetricsAfterALeak(t *testing.T) {
	n := newNode(t)
	conf, bin := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "10-a.conflist"), []byte(`{"cniVersion":"1.0.0","name":"lgnet","plugins":[{"type":"ptp"},{"type":"leakguard"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "leakguard"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	nri := filepath.Join(t.TempDir(), "nri", "state.json")
	a := agent.New(agent.Options{
		StateDir: n.stateDir, Interval: time.Hour, Recheck: -1, Reap: true,
		ConfDir: conf, BinDir: bin, NRIState: nri,
	})
	a.Do = n.do
	base := serve(t, a)

	mfs := scrape(t, base)
	if _, ok := mfs["leakguard_leaked_netns"]; ok {
		t.Error("leak figures exported before any scan")
	}
	if _, ok := mfs["leakguard_nri_connected"]; ok {
		t.Error("leakguard_nri_connected exported although leakguard-nri never reported")
	}
	if v := value(t, mfs, "leakguard_build_info", gauge); v != 1 {
		t.Errorf("build_info = %v", v)
	}

	a.ScanNow() // scan sees both leaks, then reaps the owned one
	mfs = scrape(t, base)
	for _, c := range []struct {
		name   string
		typ    dto.MetricType
		want   float64
		labels []string
	}{
		{"leakguard_leaked_netns", gauge, 2, nil},
		{"leakguard_leaked_host_links", gauge, 1, []string{"owned", "true"}},
		{"leakguard_leaked_host_links", gauge, 1, []string{"owned", "false"}},
		{"leakguard_gss_proxy_armed_netns", gauge, 1, nil},
		{"leakguard_doomed_netns", gauge, 1, nil},
		{"leakguard_reaped_total", counter, 1, []string{"kind", "host_link"}},
		{"leakguard_reaped_total", counter, 0, []string{"kind", "attachment"}},
		{"leakguard_reap_errors_total", counter, 0, []string{"kind", "host_link"}},
		{"leakguard_scans_total", counter, 1, nil},
		{"leakguard_scan_errors_total", counter, 0, nil},
		{"leakguard_scan_success", gauge, 1, nil},
		{"leakguard_chain_installed", gauge, 1, nil},
		{"leakguard_discarded_state_files", gauge, 0, nil},
	} {
		if got := value(t, mfs, c.name, c.typ, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if v := value(t, mfs, "leakguard_scan_duration_seconds", gauge); v <= 0 || v > 60 {
		t.Errorf("scan duration %v s", v)
	}
	if v := value(t, mfs, "leakguard_scan_timestamp_seconds", gauge); time.Since(time.Unix(int64(v), 0)) > time.Minute {
		t.Errorf("scan timestamp %v", v)
	}
	if v := value(t, mfs, "leakguard_reachable_netns", gauge); v < 2 {
		t.Errorf("reachable netns %v: at least the node and the live pod", v)
	}
	if _, ok := mfs["leakguard_slab_leaked_netns_estimate"]; ok {
		value(t, mfs, "leakguard_slab_leaked_netns_estimate", gauge)
	}
	// No series for an in-process installer that is not there.
	if _, ok := mfs["leakguard_chain_reinsertions_total"]; ok {
		t.Error("reinsertions exported without an installer")
	}
	if _, ok := mfs["go_goroutines"]; !ok {
		t.Error("Go runtime metrics missing")
	}
	if _, ok := mfs["process_resident_memory_bytes"]; !ok {
		t.Error("process metrics missing")
	}

	a.ScanNow() // the owned leak is gone; its record stays for DEL or GC
	mfs = scrape(t, base)
	if v := value(t, mfs, "leakguard_leaked_netns", gauge); v != 1 {
		t.Errorf("after reap: leaked netns %v, want 1 (the orphan)", v)
	}
	if v := value(t, mfs, "leakguard_leaked_host_links", gauge, "owned", "true"); v != 0 {
		t.Errorf("after reap: owned leaked links %v", v)
	}
	if v := value(t, mfs, "leakguard_reaped_total", counter, "kind", "host_link"); v != 1 {
		t.Errorf("after reap: reaped host links %v, want still 1", v)
	}

	// GC: the leaked pod's record (netns unreachable, path gone) is stale;
	// the live pod's is not.
	g := agent.New(agent.Options{StateDir: n.stateDir, Interval: time.Hour, Recheck: -1, GC: true, NRIState: nri})
	g.Do = n.do
	gbase := serve(t, g)
	g.ScanNow()
	mfs = scrape(t, gbase)
	if v := value(t, mfs, "leakguard_reaped_total", counter, "kind", "attachment"); v != 1 {
		t.Errorf("GC reaped %v attachments, want 1", v)
	}
	if v := value(t, mfs, "leakguard_reap_errors_total", counter, "kind", "attachment"); v != 0 {
		t.Errorf("GC errors %v", v)
	}
	st, err := store.OpenReadOnly(n.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	recs, _, _ := st.Entries()
	if len(recs) != 1 || recs[0].Record.ContainerID != "ctr-live" {
		t.Errorf("records after GC: %+v; want only ctr-live", recs)
	}
	if _, ok := mfs["leakguard_chain_installed"]; ok {
		t.Error("chain_installed exported although no conf dir is inspected")
	}

	// leakguard-nri's state: connected and fresh, then stale.
	now := time.Now()
	if err := nristate.Write(nri, nristate.State{PID: os.Getpid(), Connected: true, Since: now, Updated: now}); err != nil {
		t.Fatal(err)
	}
	if v := value(t, scrape(t, base), "leakguard_nri_connected", gauge); v != 1 {
		t.Errorf("nri_connected = %v, want 1", v)
	}
	old := now.Add(-nristate.StaleAfter - time.Second)
	if err := nristate.Write(nri, nristate.State{PID: 1, Connected: true, Since: old, Updated: old}); err != nil {
		t.Fatal(err)
	}
	if v := value(t, scrape(t, base), "leakguard_nri_connected", gauge); v != 0 {
		t.Errorf("nri_connected = %v for a stale file, want 0", v)
	}
}

// A failed scan is counted and marked, and the last good figures stay.
func TestScanFailureCounted(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink("/nonexistent", filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
	a := agent.New(agent.Options{StateDir: filepath.Join(dir, "state"), Interval: time.Hour, Recheck: -1})
	base := serve(t, a)
	a.ScanNow()
	mfs := scrape(t, base)
	if v := value(t, mfs, "leakguard_scan_errors_total", counter); v != 1 {
		t.Errorf("scan errors %v, want 1 (a symlinked state dir is refused)", v)
	}
	if v := value(t, mfs, "leakguard_scan_success", gauge); v != 0 {
		t.Errorf("scan_success %v", v)
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d: a failing scan is not a hung agent", code)
	}
}

// /readyz with an in-process installer is 503 until the chain holds
// leakguard, then 200; without the chain requirement it only waits for the
// first scan. /healthz is 200 while the loop runs.
func TestReadyzWaitsForTheChain(t *testing.T) {
	root := t.TempDir()
	conf, bin, from := filepath.Join(root, "net.d"), filepath.Join(root, "bin"), filepath.Join(root, "from")
	for _, d := range []string{conf, bin, from} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(from, "leakguard"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := install.New(install.Options{ConfDir: conf, BinDir: bin, From: from})
	if err != nil {
		t.Fatal(err)
	}
	a := agent.New(agent.Options{StateDir: filepath.Join(root, "state"), Interval: time.Hour, Recheck: -1, Installer: in, ReadyNeedsChain: true})
	base := serve(t, a)
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "first scan") {
		t.Fatalf("/readyz before any scan: %d %s", code, body)
	}
	a.ScanNow()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Watch(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(200 * time.Millisecond)
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no primary") {
		t.Fatalf("/readyz with no primary: %d %s", code, body)
	}
	if v := value(t, scrape(t, base), "leakguard_chain_installed", gauge); v != 0 {
		t.Fatalf("chain_installed %v", v)
	}
	if err := os.WriteFile(filepath.Join(conf, "10-a.conflist"), []byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := get(t, base+"/readyz")
		if code == http.StatusOK {
			if !strings.Contains(body, "10-a.conflist") {
				t.Errorf("/readyz body %q", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mfs := scrape(t, base)
	if v := value(t, mfs, "leakguard_chain_installed", gauge); v != 1 {
		t.Errorf("chain_installed %v", v)
	}
	if v := value(t, mfs, "leakguard_chain_reinsertions_total", counter); v != 0 {
		t.Errorf("reinsertions %v", v)
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d", code)
	}

	plain := agent.New(agent.Options{StateDir: filepath.Join(root, "state"), Interval: time.Hour, Recheck: -1})
	pbase := serve(t, plain)
	plain.ScanNow()
	if code, body := get(t, pbase+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz without the chain requirement: %d %s", code, body)
	}
}
