package cri

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	rt "github.com/leakguard/leakguard/test/runtime"
)

// BenchmarkNRICreateStart is what leakguard-nri and the hook cost a container
// start through CRI: `crictl create` + `crictl start` of a privileged
// container of the gssproxy image (the hook edits both configs, its slowest
// case). Two private containerds run side by side, identical but for the
// external leakguard-nri connected to one; containers alternate between them,
// so that the machine's load falls on both cases alike. It prints the
// medians, the median of the paired differences, and the time the plugin
// spent inside CreateContainer, as it measured it (its debug lines). Run it
// with scripts/bench-nri.sh (-benchtime 1x: one run is the whole
// measurement). LEAKGUARD_BENCH_N sets the containers per case (default 40);
// LEAKGUARD_BENCH_HOOK replaces the hook the plugin injects (/bin/true, say,
// separates the cost of running any hook from leakguard-hook's own work);
// "none" connects no plugin at all, so both cases are the same: the spread
// that remains is the measurement's own noise.
func BenchmarkNRICreateStart(b *testing.B) {
	n := 40
	if s := os.Getenv("LEAKGUARD_BENCH_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 10 {
			b.Fatalf("LEAKGUARD_BENCH_N=%q: want a number ≥ 10", s)
		}
	}
	for range b.N {
		loadStart := loadAvg()
		plain, guarded := startNRIContainerd(b), startNRIContainerd(b)
		calibrate := os.Getenv("LEAKGUARD_BENCH_HOOK") == "none"
		if hook := os.Getenv("LEAKGUARD_BENCH_HOOK"); hook != "" && !calibrate {
			guarded.hook = hook
		}
		if !calibrate {
			guarded.startExternal(b)
			guarded.waitJoined(b, 1)
		}
		plainPod := plain.ctd.Crictl.RunPod(b, rt.PodSpec{Privileged: true})
		guardedPod := guarded.ctd.Crictl.RunPod(b, rt.PodSpec{Privileged: true})
		// Warm-up, not counted: first image use, first snapshot.
		for i := range 3 {
			plain.timeCreateStart(b, plainPod, fmt.Sprintf("warm-%d", i))
			guarded.timeCreateStart(b, guardedPod, fmt.Sprintf("warm-%d", i))
		}
		var with, without []sample
		for i := range n {
			// Alternate which goes first, so that neither is always second.
			if i%2 == 0 {
				without = append(without, plain.timeCreateStart(b, plainPod, fmt.Sprintf("plain-%d", i)))
				with = append(with, guarded.timeCreateStart(b, guardedPod, fmt.Sprintf("nri-%d", i)))
			} else {
				with = append(with, guarded.timeCreateStart(b, guardedPod, fmt.Sprintf("nri-%d", i)))
				without = append(without, plain.timeCreateStart(b, plainPod, fmt.Sprintf("plain-%d", i)))
			}
		}
		inside := guarded.createDurations(b)
		if calibrate {
			inside = make([]time.Duration, n) // no plugin: nothing timed inside it
		}
		if len(inside) != n {
			b.Fatalf("the plugin logged %d CreateContainer durations, want %d", len(inside), n)
		}
		report(b, with, without, inside, loadStart)
	}
}

// sample is one container's crictl create and crictl start.
type sample struct{ create, start time.Duration }

func (s sample) total() time.Duration { return s.create + s.start }

// timeCreateStart times crictl create and crictl start of one container,
// then removes it (not timed).
func (h *nriHarness) timeCreateStart(b *testing.B, pod *rt.Pod, name string) sample {
	b.Helper()
	spec := rt.ContainerSpec{Name: name, Image: GssproxyImage, Command: []string{"sleep", "3600"}, Privileged: true}
	t0 := time.Now()
	id := h.ctd.Crictl.CreateContainer(b, pod, spec)
	t1 := time.Now()
	h.ctd.Crictl.MustRun(b, "start", id)
	s := sample{create: t1.Sub(t0), start: time.Since(t1)}
	h.ctd.Crictl.MustRun(b, "stop", "-t", "0", id)
	h.ctd.Crictl.MustRun(b, "rm", id)
	return s
}

// createDurations are the plugin's own CreateContainer timings (its debug
// log), for the benchmark's containers.
func (h *nriHarness) createDurations(b *testing.B) []time.Duration {
	b.Helper()
	var out []time.Duration
	for _, l := range h.pluginLines(b, "CreateContainer") {
		if l["msg"] == "CreateContainer" && strings.HasPrefix(l["name"].(string), "nri-") {
			out = append(out, time.Duration(l["duration_us"].(float64)*1e3))
		}
	}
	return out
}

// loadAvg is the machine's 1-minute load average (/proc/loadavg), for the
// record: the figures depend on what else runs.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

func report(b *testing.B, with, without []sample, inside []time.Duration, loadStart string) {
	pick := func(ss []sample, f func(sample) time.Duration) []time.Duration {
		out := make([]time.Duration, len(ss))
		for i, s := range ss {
			out[i] = f(s)
		}
		return out
	}
	total := func(s sample) time.Duration { return s.total() }
	wTotal, woTotal := pick(with, total), pick(without, total)
	mWith, mWithout := median(wTotal), median(woTotal)
	ratio := float64(mWith) / float64(mWithout)
	delta := mWith - mWithout
	paired := make([]time.Duration, len(with))
	for i := range with {
		paired[i] = wTotal[i] - woTotal[i]
	}
	met := ratio <= 1.05 || delta <= 5*time.Millisecond
	p99 := quantile(inside, 0.99)
	yes := map[bool]string{true: "met", false: "NOT met"}
	fmt.Printf("\nleakguard-nri: crictl create + start of a privileged container (the hook edits 2 gssproxy files), %d per case, alternating; load average %s → %s\n",
		len(with), loadStart, loadAvg())
	row := func(name string, ss []sample, tot []time.Duration) {
		fmt.Printf("  %-36s create %7.2f ms  start %7.2f ms  total median %7.2f ms  p90 %7.2f ms\n", name,
			ms(median(pick(ss, func(s sample) time.Duration { return s.create }))),
			ms(median(pick(ss, func(s sample) time.Duration { return s.start }))),
			ms(median(tot)), ms(quantile(tot, 0.9)))
	}
	row("without NRI plugin", without, woTotal)
	row("with leakguard-nri + leakguard-hook", with, wTotal)
	fmt.Printf("  ratio of medians %.3f, delta %+.2f ms, median of paired deltas %+.2f ms (target ≤ 1.05x or ≤ +5 ms: %s)\n",
		ratio, ms(delta), ms(median(paired)), yes[met])
	fmt.Printf("  inside CreateContainer (plugin's own timing): p50 %.1f µs, p99 %.1f µs, max %.1f µs (target p99 ≤ 1 ms: %s)\n",
		us(median(inside)), us(p99), us(slices.Max(inside)), yes[p99 <= time.Millisecond])
	b.ReportMetric(ms(mWithout), "ms-median-without")
	b.ReportMetric(ms(mWith), "ms-median-with")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(us(p99), "µs-plugin-p99")
}

func median(d []time.Duration) time.Duration { return quantile(d, 0.5) }

// quantile is the nearest-rank quantile.
func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
func us(d time.Duration) float64 { return float64(d) / 1e3 }
