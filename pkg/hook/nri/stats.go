package nri

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of what the plugin has done since it started. Counters
// only grow; a metrics agent can export them as they are.
type Stats struct {
	// Connected: registered with the runtime right now.
	Connected bool
	// Since is when Connected last changed (zero before the first attempt).
	Since time.Time
	// Connects counts registrations, Disconnects lost connections.
	Connects, Disconnects uint64
	// Injected counts containers the hook was added to; AlreadyHooked those
	// whose spec already ran it (e.g. from base_runtime_spec), left as they
	// were; Skipped those created without it because the hook binary was
	// unusable; Refused those failed on purpose (policy failClosed).
	Injected, AlreadyHooked, Skipped, Refused uint64
	// Missed counts containers the runtime listed on (re)connect that this
	// process had not been asked about: they started while it was away (on
	// the first connection, every running container). MissedUnhooked is the
	// part of them whose spec has no leakguard-hook: not protected.
	Missed, MissedUnhooked uint64
	// Create is the time spent inside CreateContainer.
	Create LatencyStats
}

// LatencyStats summarises CreateContainer durations: quantiles over the last
// latencyWindow calls, Count and Max over all of them.
type LatencyStats struct {
	Count         uint64
	P50, P99, Max time.Duration
}

type counters struct {
	connects, disconnects                     atomic.Uint64
	injected, alreadyHooked, skipped, refused atomic.Uint64
	missed, missedUnhooked                    atomic.Uint64
}

// connState is the connected flag and when it last changed.
type connState struct {
	mu        sync.Mutex
	connected bool
	since     time.Time
}

func (c *connState) set(connected bool) {
	c.mu.Lock()
	c.connected, c.since = connected, time.Now()
	c.mu.Unlock()
}

func (c *connState) get() (bool, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected, c.since
}

// latencyWindow is how many recent samples the quantiles are computed over.
const latencyWindow = 4096

// latency keeps the last latencyWindow durations: exact quantiles of recent
// calls at the cost of one mutex per call and 32 KiB.
type latency struct {
	mu    sync.Mutex
	ring  [latencyWindow]time.Duration
	count uint64
	max   time.Duration
}

func (l *latency) add(d time.Duration) {
	l.mu.Lock()
	l.ring[l.count%latencyWindow] = d
	l.count++
	l.max = max(l.max, d)
	l.mu.Unlock()
}

func (l *latency) stats() LatencyStats {
	l.mu.Lock()
	n := int(min(l.count, latencyWindow))
	s := LatencyStats{Count: l.count, Max: l.max}
	recent := slices.Clone(l.ring[:n])
	l.mu.Unlock()
	if n == 0 {
		return s
	}
	slices.Sort(recent)
	s.P50 = recent[quantileIndex(n, 0.50)]
	s.P99 = recent[quantileIndex(n, 0.99)]
	return s
}

// quantileIndex is the nearest-rank index of quantile q among n sorted samples.
func quantileIndex(n int, q float64) int {
	i := int(math.Ceil(q*float64(n))) - 1
	return min(max(i, 0), n-1)
}
