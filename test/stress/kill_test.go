package stress

import (
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/leakguard/leakguard/test/nsutil"
)

// size.rounds rounds, cycling through pinNetns off/on and netns alive/leaked
// (by a socket held by leaksim, path removed before DEL): the bridge ADDs
// the pod, then leakguard's ADD and its DEL are each exec'd directly and
// SIGKILLed after a random delay within their typical duration. Afterwards
// the chain's DEL through cnitool must leave a clean node (no host veth of
// the pod, no record, lock, temp file or pin mount, the IP released), and a
// final GC must drop every tombstone.
func TestSIGKILLDuringAddAndDel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LEAKGUARD_STRESS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("LEAKGUARD_STRESS_SEED: %v", err)
		}
	}
	t.Logf("seed %d (LEAKGUARD_STRESS_SEED reproduces the delays)", seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	nodes := map[bool]*node{false: newNode(t, false), true: newNode(t, true)}
	typical := calibrate(t, nodes)
	t.Logf("typical durations: ADD %v, DEL %v", typical["ADD"], typical["DEL"])
	links := map[bool]map[int]linkID{}
	for pin, n := range nodes {
		n.addDecoy()
		links[pin] = n.links() // the bridge (made by calibration) and the decoy
	}

	var (
		kills   = map[string]int{}
		before  = leftovers{}
		after   = leftovers{}
		failed  []int
		started = time.Now()
	)
	for r := 0; r < size.rounds; r++ {
		v := variants[r%len(variants)]
		n := nodes[v.pin]
		// Only what this round adds counts: a leftover of an earlier
		// round is reported there (and by the final GC), not again.
		base := n.leftovers(nil)
		p := n.newPod(r)
		if err := n.mainAdd(p); err != nil {
			t.Fatalf("round %d: bridge ADD: %v", r, err)
		}
		var how []string
		for _, verb := range []string{"ADD", "DEL"} {
			if verb == "DEL" && v.leaked {
				if err := n.leak(p, bySocket); err != nil {
					t.Fatalf("round %d: %v", r, err)
				}
			}
			delay := time.Duration(rng.Int64N(int64(typical[verb]) + 1))
			killed, _, err := n.killAfter(verb, p, delay)
			if err != nil {
				t.Errorf("round %d (%s): leakguard %s not killed but failed: %v", r, v, verb, err)
			}
			if killed {
				kills[verb]++
				how = append(how, verb+" killed after "+delay.String())
			} else {
				how = append(how, verb+" done before "+delay.String())
			}
		}
		before.add(n.leftovers([]*pod{p}).minus(base))

		if err := n.del(p); err != nil {
			t.Errorf("round %d (%s, %v): cleanup DEL: %v", r, v, how, err)
		}
		left := n.leftovers([]*pod{p}).minus(base)
		delete(left, tombstone) // GC's, checked at the end
		after.add(left)
		if left.total() > 0 {
			failed = append(failed, r)
			t.Errorf("round %d (%s, %v): the cleanup DEL left %s: %v\nleakguard's log of the pod:\n%s", r, v, how, left, left.items(), n.logOf(p))
		}
		p.destroy()
	}
	final := leftovers{}
	for _, pin := range []bool{false, true} {
		final.add(nodes[pin].collect(nil))
		for _, w := range nodes[pin].wrongDeletions(links[pin], nil) {
			t.Error(w)
		}
	}
	report(t, "%d rounds in %v: %d ADDs and %d DELs killed (of %d each); left before the cleanup DEL: %s; left after it: %s (%d rounds: %v); left after the final GC: %d",
		size.rounds, time.Since(started).Round(time.Millisecond), kills["ADD"], kills["DEL"], size.rounds,
		before, after, len(failed), failed, final.total()+len(final[tombstone]))
}

// calibrate runs unkilled rounds on each node (netns alive) and returns the
// median duration of leakguard's ADD and DEL; the rounds must end clean.
func calibrate(t *testing.T, nodes map[bool]*node) map[string]time.Duration {
	t.Helper()
	samples := map[string][]time.Duration{}
	for i := 0; i < 3; i++ {
		for _, pin := range []bool{false, true} {
			n := nodes[pin]
			p := n.newPod(-1 - i)
			if err := n.mainAdd(p); err != nil {
				t.Fatal(err)
			}
			for _, verb := range []string{"ADD", "DEL"} {
				killed, d, err := n.killAfter(verb, p, callTimeout)
				if err != nil || killed {
					t.Fatalf("calibration %s: killed %v, %v", verb, killed, err)
				}
				samples[verb] = append(samples[verb], d)
			}
			if err := n.del(p); err != nil {
				t.Fatal(err)
			}
			if l := n.leftovers([]*pod{p}); l.total() > 0 {
				t.Fatalf("calibration round left %s: %v", l, l.items())
			}
			p.destroy()
		}
	}
	typical := map[string]time.Duration{}
	for verb, s := range samples {
		slices.Sort(s)
		typical[verb] = s[len(s)/2]
	}
	return typical
}

// killAfter runs leakguard's verb on p directly and SIGKILLs it after delay
// unless it ended first. It reports whether the kill ended it, how long it
// ran, and the error of a run that was not killed.
func (n *node) killAfter(verb string, p *pod, delay time.Duration) (bool, time.Duration, error) {
	cmd := n.leakguardCmd(verb, p)
	var timer *time.Timer
	start := time.Now()
	_, err := runBounded(cmd, func(proc *os.Process) {
		timer = time.AfterFunc(delay, func() { _ = proc.Signal(syscall.SIGKILL) })
	})
	ran := time.Since(start)
	if timer != nil {
		timer.Stop()
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true, ran, nil
		}
	}
	return false, ran, err
}

// destroy releases the pod's netns once the round is over.
func (p *pod) destroy() {
	p.release()
	if p.ns != nil {
		_ = p.ns.Close()
		p.ns = nil
	}
	_ = nsutil.RemovePath(p.path)
}
