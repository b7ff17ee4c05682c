package agent_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leakguard/leakguard/pkg/scan/agent"
)

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// rounds runs n rounds (scan, and a scrape every 10th) of an agent over a
// small node with a leak, and returns the live heap after warm-up and at
// the end.
func rounds(tb testing.TB, n int) (uint64, uint64) {
	node := newNode(tb)
	a := agent.New(agent.Options{StateDir: node.stateDir, Interval: time.Hour, Recheck: -1})
	a.Do = node.do
	reg := prometheus.NewRegistry()
	reg.MustRegister(a)
	round := func(i int) {
		a.ScanNow()
		if i%10 == 0 {
			if _, err := reg.Gather(); err != nil {
				tb.Fatal(err)
			}
		}
	}
	for i := 0; i < 50; i++ {
		round(i)
	}
	before := liveHeap()
	for i := 0; i < n; i++ {
		round(i)
	}
	return before, liveHeap()
}

// The agent keeps numbers, not reports: its live heap does not grow with
// the number of rounds. (BenchmarkRounds runs 10,000 of them.)
func TestMemoryFlatOverRounds(t *testing.T) {
	before, after := rounds(t, 300)
	t.Logf("live heap after 50 rounds %d B, after 300 more %d B", before, after)
	if after > before+1<<20 {
		t.Fatalf("live heap grew by %d B over 300 rounds", after-before)
	}
}

// BenchmarkRounds reports the live heap before and after b.N rounds; run it
// as `go test -run XXX -bench Rounds -benchtime 10000x ./pkg/scan/agent/`.
func BenchmarkRounds(b *testing.B) {
	before, after := rounds(b, b.N)
	b.ReportMetric(float64(before), "heap-before-B")
	b.ReportMetric(float64(after), "heap-after-B")
	b.ReportMetric(float64(int64(after)-int64(before))/float64(b.N), "heap-growth-B/round")
}
