package agent

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /metrics (the agent's metrics, and the Go runtime's and
// the process's), /healthz and /readyz.
func (a *Agent) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(a, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{a}, MaxRequestsInFlight: 4}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := a.Healthy()
		reply(w, ok, why)
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := a.Ready()
		reply(w, ok, why)
	})
	return mux
}

func reply(w http.ResponseWriter, ok bool, why string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, why)
}

// stuckAfter is how late a round may be before the agent calls itself
// unhealthy (a scan hung on the kernel): two intervals and a minute.
func (a *Agent) stuckAfter() time.Duration { return 2*a.opts.Interval + time.Minute }

// Healthy tells whether the scan loop is alive: a round finished within
// stuckAfter (or, before the first, since the start).
func (a *Agent) Healthy() (bool, string) {
	a.mu.Lock()
	last := a.finished
	a.mu.Unlock()
	if last.IsZero() {
		last = a.started
	}
	if late := time.Since(last); late > a.stuckAfter() {
		return false, fmt.Sprintf("no scan round finished for %v", late.Round(time.Second))
	}
	return true, "ok"
}

// Ready tells whether the node is covered: the first round is done and,
// with ReadyNeedsChain, the CNI config runtimes load runs leakguard (the
// in-process installer's view, else the conf dir's).
func (a *Agent) Ready() (bool, string) {
	a.mu.Lock()
	scanned := !a.finished.IsZero()
	a.mu.Unlock()
	if !scanned {
		return false, "first scan not finished"
	}
	if !a.opts.ReadyNeedsChain {
		return true, "ok"
	}
	if in := a.opts.Installer; in != nil {
		st := in.Status()
		if !st.Installed {
			return false, "leakguard is not in the chain: " + st.Err
		}
		return true, "leakguard is in the chain (" + st.File + ")"
	}
	ok, why := a.chainInstalled()
	return ok, why
}

// slogPrinter hands promhttp's errors to the agent's log.
type slogPrinter struct{ a *Agent }

func (p slogPrinter) Println(v ...any) { p.a.log.Error("metrics", "err", fmt.Sprint(v...)) }
