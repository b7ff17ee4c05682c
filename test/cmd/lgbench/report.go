package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// Targets from the issue.
const (
	targetRatio     = 1.0  // leakguard / tuning, ADD and DEL
	targetGoneRatio = 1.2  // DEL with netns gone, many links / few links
	targetRSSMiB    = 30.0 // peak RSS of leakguard
)

type stat struct {
	n              int
	med, p95       time.Duration
	rssMed, rssMax int64 // KiB
}

func stats(ss []sample) stat {
	if len(ss) == 0 {
		return stat{}
	}
	walls := make([]time.Duration, len(ss))
	rss := make([]int64, len(ss))
	for i, s := range ss {
		walls[i], rss[i] = s.Wall, s.MaxRSS
	}
	slices.Sort(walls)
	slices.Sort(rss)
	return stat{
		n:      len(ss),
		med:    median(walls),
		p95:    walls[rank(len(walls), 0.95)],
		rssMed: median(rss),
		rssMax: rss[len(rss)-1],
	}
}

func median[T time.Duration | int64](sorted []T) T {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// rank is the nearest-rank index of quantile q in n sorted values.
func rank(n int, q float64) int {
	i := int(float64(n)*q+0.999999) - 1
	return min(max(i, 0), n-1)
}

// pick returns the samples of plugin i of a chain; whole, the chain's:
// plugin wall times summed, peak RSS the largest.
func pick(pods []pluginSamples, i int) []sample {
	out := make([]sample, len(pods))
	for p, ss := range pods {
		out[p] = ss[i]
	}
	return out
}

func whole(pods []pluginSamples) []sample {
	out := make([]sample, len(pods))
	for p, ss := range pods {
		for _, s := range ss {
			out[p].Wall += s.Wall
			out[p].MaxRSS = max(out[p].MaxRSS, s.MaxRSS)
		}
	}
	return out
}

type table struct{ b strings.Builder }

func (t *table) row(label string, s stat) {
	fmt.Fprintf(&t.b, "  %-34s %9s %9s %9s %9s\n", label, ms(s.med), ms(s.p95), mib(s.rssMed), mib(s.rssMax))
}

func (t *table) ratio(label string, num, den stat, target float64) {
	r := ratio(num.med, den.med)
	fmt.Fprintf(&t.b, "  %-34s %8.2fx %8.2fx %9s %9s   target <= %.2f: %s\n", label,
		r, ratio(num.p95, den.p95), "", "", target, verdict(r <= target))
}

func (t *table) info(label string, num, den stat) {
	fmt.Fprintf(&t.b, "  %-34s %8.2fx %8.2fx\n", label, ratio(num.med, den.med), ratio(num.p95, den.p95))
}

func (t *table) line(format string, a ...any) { fmt.Fprintf(&t.b, format+"\n", a...) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
func mib(k int64) string        { return fmt.Sprintf("%.1fMiB", float64(k)/1024) }

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func printReport(o options, floorKiB int64, a *chainResults, g *goneResults, w *wrapperResults) {
	var t table
	header := func() {
		t.line("  %-34s %9s %9s %9s %9s", "", "median", "p95", "RSS med", "RSS max")
	}
	t.line("leakguard benchmark (cniVersion %s; %d pods per chain, %d leaked pods per node, each in a fresh netns)", cniVersion, o.pods, o.gonePods)
	t.line("Plugins are exec'd as libcni does (config + prevResult on stdin, CNI_* env) inside throw-away node netns.")
	t.line("Wall = fork to reap of the plugin process. RSS = its ru_maxrss, including children it waits for")
	t.line("(host-local under bridge); measurement floor (launcher running /bin/true): %s.", mib(floorKiB))
	t.line("tuning config: sysctl net.ipv4.conf.IFNAME.log_martians=0; leakguard: defaults; their state dirs on %s", o.stateFS)
	t.line("(as /run on a node). Ratios: medians (first column) and p95s (second); targets are judged on medians.")

	var lgPeak int64
	const tuned, guarded, onDisk = "bridge+tuning", "bridge+leakguard", "bridge+leakguard, state on disk"
	for _, verb := range []string{"ADD", "DEL"} {
		res := a.add
		if verb == "DEL" {
			res = a.del
		}
		tuS, lgS := stats(pick(res[tuned], 1)), stats(pick(res[guarded], 1))
		tuW, lgW := stats(whole(res[tuned])), stats(whole(res[guarded]))
		lgPeak = max(lgPeak, lgS.rssMax)
		t.line("")
		t.line("%s, alive pod netns", verb)
		header()
		t.row("tuning alone (bridge+tuning)", tuS)
		t.row("leakguard alone (bridge+leakguard)", lgS)
		t.ratio("  leakguard / tuning", lgS, tuS, targetRatio)
		t.row("whole chain bridge+tuning", tuW)
		t.row("whole chain bridge+leakguard", lgW)
		t.info("  leakguard chain / tuning chain", lgW, tuW)
		if d, ok := res[onDisk]; ok {
			dS := stats(pick(d, 1))
			lgPeak = max(lgPeak, dS.rssMax)
			t.row("leakguard alone, state on disk", dS)
			t.info("  on disk / tuning (fsync cost)", dS, tuS)
		}
	}
	tuU, lgU := stats(a.startup[tuned]), stats(a.startup[guarded])
	lgPeak = max(lgPeak, lgU.rssMax)
	t.line("")
	t.line("Start-up alone (CNI_COMMAND=VERSION: exec + Go runtime, no work)")
	header()
	t.row("tuning", tuU)
	t.row("leakguard", lgU)
	t.info("  leakguard / tuning", lgU, tuU)

	few, many := stats(g.del[o.fewLinks]), stats(g.del[o.manyLinks])
	lgPeak = max(lgPeak, few.rssMax, many.rssMax)
	t.line("")
	t.line("DEL with the netns gone (leakguard alone; pod leaked by a socket, path removed; unrelated links = host veths")
	t.line("whose peers are in another netns). Host veth reaped: %d/%d (%d links), %d/%d (%d links).",
		g.reaped[o.fewLinks], few.n, o.fewLinks, g.reaped[o.manyLinks], many.n, o.manyLinks)
	header()
	t.row(fmt.Sprintf("node with %d unrelated links", o.fewLinks), few)
	t.row(fmt.Sprintf("node with %d unrelated links", o.manyLinks), many)
	t.ratio(fmt.Sprintf("  %d / %d", o.manyLinks, o.fewLinks), many, few, targetGoneRatio)

	w.report(&t, o)

	t.line("")
	peak := float64(lgPeak) / 1024
	t.line("Peak RSS of leakguard over all runs: %.1fMiB   target <= %.0f MiB: %s", peak, targetRSSMiB, verdict(peak <= targetRSSMiB))
	for _, pair := range w.pairs {
		for _, c := range pair {
			if w.reaped[c.label] != len(w.del[c.label][phaseLeaked]) {
				t.line("WARNING: %s did not reap every leaked pod's host veth.", c.label)
			}
		}
	}
	if g.reaped[o.fewLinks] != few.n || g.reaped[o.manyLinks] != many.n {
		t.line("WARNING: leakguard did not reap every leaked pod's host veth; the netns-gone figures measure a DEL that did not do its job.")
	}
	fmt.Fprint(os.Stdout, t.b.String())
}
