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
// measurement). LEAKGUARD_BENCH_N sets the containers per case (default 40).
func BenchmarkNRICreateStart(b *testing.B) {
	n := 40
	if s := os.Getenv("LEAKGUARD_BENCH_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 10 {
			b.Fatalf("LEAKGUARD_BENCH_N=%q: want a number ≥ 10", s)
		}
	}
	for range b.N {
		plain, guarded := startNRIContainerd(b), startNRIContainerd(b)
		guarded.startExternal(b)
		guarded.waitJoined(b, 1)
		plainPod := plain.ctd.Crictl.RunPod(b, rt.PodSpec{Privileged: true})
		guardedPod := guarded.ctd.Crictl.RunPod(b, rt.PodSpec{Privileged: true})
		// Warm-up, not counted: first image use, first snapshot.
		for i := range 3 {
			plain.timeCreateStart(b, plainPod, fmt.Sprintf("warm-%d", i))
			guarded.timeCreateStart(b, guardedPod, fmt.Sprintf("warm-%d", i))
		}
		var with, without []time.Duration
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
		if len(inside) != n {
			b.Fatalf("the plugin logged %d CreateContainer durations, want %d", len(inside), n)
		}
		report(b, with, without, inside)
	}
}

// timeCreateStart times crictl create + start of one container, then
// removes it (not timed).
func (h *nriHarness) timeCreateStart(b *testing.B, pod *rt.Pod, name string) time.Duration {
	b.Helper()
	spec := rt.ContainerSpec{Name: name, Image: GssproxyImage, Command: []string{"sleep", "3600"}, Privileged: true}
	start := time.Now()
	id := h.ctd.Crictl.RunContainer(b, pod, spec)
	d := time.Since(start)
	h.ctd.Crictl.MustRun(b, "stop", "-t", "0", id)
	h.ctd.Crictl.MustRun(b, "rm", id)
	return d
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

func report(b *testing.B, with, without, inside []time.Duration) {
	mWith, mWithout := median(with), median(without)
	ratio := float64(mWith) / float64(mWithout)
	delta := mWith - mWithout
	paired := make([]time.Duration, len(with))
	for i := range with {
		paired[i] = with[i] - without[i]
	}
	met := ratio <= 1.05 || delta <= 5*time.Millisecond
	p99 := quantile(inside, 0.99)
	fmt.Printf("\nleakguard-nri: crictl create+start of a privileged container (hook edits 2 gssproxy files), %d containers per case, alternating\n", len(with))
	fmt.Printf("  %-34s median %7.2f ms   p90 %7.2f ms\n", "without NRI plugin", ms(mWithout), ms(quantile(without, 0.9)))
	fmt.Printf("  %-34s median %7.2f ms   p90 %7.2f ms\n", "with leakguard-nri + leakguard-hook", ms(mWith), ms(quantile(with, 0.9)))
	fmt.Printf("  ratio of medians %.3f, delta %+.2f ms, median of paired deltas %+.2f ms (target ≤ 1.05x or ≤ +5 ms: %s)\n",
		ratio, ms(delta), ms(median(paired)), map[bool]string{true: "met", false: "NOT met"}[met])
	fmt.Printf("  inside CreateContainer (plugin's own timing): p50 %.1f µs, p99 %.1f µs, max %.1f µs (target p99 ≤ 1 ms: %s)\n",
		us(median(inside)), us(p99), us(slices.Max(inside)), map[bool]string{true: "met", false: "NOT met"}[p99 <= time.Millisecond])
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
