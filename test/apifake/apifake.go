// Package apifake is a Kubernetes API server for tests, over TLS, that
// knows one pod and the DaemonSet that owns it, and answers as told: the
// object (the real JSON of corev1.Pod and appsv1.DaemonSet), NotFound,
// Forbidden, no Answer, or a body that is not JSON. New writes a service
// account dir (token, ca.crt) under a temp dir, so nothing reads
// /var/run/secrets.
package apifake

import (
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/leakguard/leakguard/pkg/install/ondelete"
)

// The pod and DaemonSet served, and the service account's token.
const (
	Namespace     = "kube-system"
	PodName       = "leakguard-x7k2p"
	DaemonSetName = "leakguard"
	Token         = "test-token-0123"
	DaemonSetUID  = types.UID("6f1c3c51-0000-4000-8000-00000000d5e7")
)

// Answer is how the fake API server answers one path.
type Answer int

const (
	ServeObject Answer = iota // the object, as the API server's JSON
	NotFound                  // 404 with a Status
	Forbidden                 // 403 with a Status, as RBAC denies
	Hang                      // never answers (until the client gives up)
	Malformed                 // 200 with a body that is not JSON
	// BareNotFound is a 404 that is no API Status (a proxy or a load
	// balancer in front of the API server, a misrouted path).
	BareNotFound
	// NotFoundOther is a 404 Status about another object than the one
	// asked for.
	NotFoundOther
)

// Server is an API server over TLS that knows one pod and its DaemonSet.
type Server struct {
	// Srv is the TLS server; SADir the service account dir.
	Srv   *httptest.Server
	SADir string
	mu    sync.Mutex
	// Pod and DS are served (change them with Set); PodAnswer and
	// DSAnswer say how.
	Pod       corev1.Pod
	DS        appsv1.DaemonSet
	PodAnswer Answer
	DSAnswer  Answer
	// Hits counts requests; BadAuth those without the token.
	Hits    atomic.Int64
	BadAuth atomic.Int64
	// RejectToken makes every new request fail 401, as when the service
	// account was deleted; open watches go on (the API server does not
	// authorize them again).
	RejectToken bool
	// Watches counts the DaemonSet watches opened.
	Watches atomic.Int64
	// WatchRVs are the resourceVersion parameters of the watches opened
	// ("" when none).
	WatchRVs []string
	// DSGone: a new watch without a resourceVersion starts with no ADDED
	// event (the DaemonSet does not exist).
	DSGone bool
	// Compacted: a watch from a resourceVersion before it ends at once
	// with an ERROR event 410 Gone, as the API server's does when that
	// version is no longer in its watch cache.
	Compacted int
	watchers  []chan []byte
	endWatch  chan struct{}
	// rv is the last resourceVersion given; history the events sent, for
	// a watch from a resourceVersion.
	rv      int
	history []rvEvent
	stop    chan struct{}
}

type rvEvent struct {
	rv  int
	raw []byte
}

// EndWatches ends every open watch, as the API server does at the watch's
// timeoutSeconds or when it restarts.
func (f *Server) EndWatches() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.endWatch)
	f.endWatch = make(chan struct{})
}

// SendWatch sends an event about the DaemonSet (ADDED, MODIFIED, DELETED)
// to every open watch.
// Each event gets the next resourceVersion, and is kept for watches that
// start from an earlier one.
func (f *Server) SendWatch(typ string, ds appsv1.DaemonSet) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	ds.ResourceVersion = strconv.Itoa(f.rv)
	raw, err := json.Marshal(map[string]any{"type": typ, "object": ds})
	if err != nil {
		panic(err)
	}
	f.history = append(f.history, rvEvent{f.rv, raw})
	for _, c := range f.watchers {
		c <- raw
	}
}

// New starts the server and writes a service account dir (token and
// the server's CA) under a temp dir: nothing reads /var/run/secrets.
func New(t *testing.T) *Server {
	t.Helper()
	f := &Server{stop: make(chan struct{}), endWatch: make(chan struct{}), rv: 100}
	yes := true
	f.Pod = corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{
			Name: PodName, Namespace: Namespace, UID: "0a0a0a0a-0000-4000-8000-000000000001",
			Labels: map[string]string{"app.kubernetes.io/name": "leakguard"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "DaemonSet", Name: DaemonSetName, UID: DaemonSetUID, Controller: &yes, BlockOwnerDeletion: &yes,
			}},
		},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "agent", Image: "ghcr.io/leakguard/leakguard:test"}}},
	}
	f.DS = appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{Kind: "DaemonSet", APIVersion: "apps/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: DaemonSetName, Namespace: Namespace, UID: DaemonSetUID, Generation: 2},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "leakguard"}},
		},
	}
	f.Srv = httptest.NewTLSServer(f)
	t.Cleanup(func() {
		close(f.stop)
		f.Srv.Close()
	})
	f.SADir = t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.Srv.Certificate().Raw})
	for name, data := range map[string][]byte{"token": []byte(Token), "ca.crt": ca, "namespace": []byte(Namespace)} {
		if err := os.WriteFile(filepath.Join(f.SADir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// Set changes what is served, under the server's lock.
func (f *Server) Set(fn func(f *Server)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// Env is the pod's environment as the kubelet and the downward API set it.
func (f *Server) Env() func(string) string {
	host, port, _ := net.SplitHostPort(f.Srv.Listener.Addr().String())
	vars := map[string]string{
		ondelete.EnvHost: host, ondelete.EnvPort: port,
		ondelete.EnvNamespace: Namespace, ondelete.EnvPod: PodName,
	}
	return func(k string) string { return vars[k] }
}

// Config is the in-cluster config for Env and SADir.
func (f *Server) Config(t *testing.T) ondelete.Config {
	t.Helper()
	c, err := ondelete.ConfigFromEnv(f.Env(), f.SADir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ServeHTTP answers as told.
func (f *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.Hits.Add(1)
	f.mu.Lock()
	reject := f.RejectToken
	f.mu.Unlock()
	if reject || r.Header.Get("Authorization") != "Bearer "+Token {
		f.BadAuth.Add(1)
		status(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized", nil)
		return
	}
	f.mu.Lock()
	pod, ds, podAns, dsAns := f.Pod, f.DS, f.PodAnswer, f.DSAnswer
	f.mu.Unlock()
	var obj any
	var ans Answer
	var details *metav1.StatusDetails
	switch r.URL.Path {
	case "/apis/apps/v1/namespaces/" + Namespace + "/daemonsets":
		f.watch(w, r, ds)
		return
	case "/api/v1/namespaces/" + Namespace + "/pods/" + PodName:
		obj, ans, details = pod, podAns, &metav1.StatusDetails{Name: PodName, Kind: "pods"}
	case "/apis/apps/v1/namespaces/" + Namespace + "/daemonsets/" + DaemonSetName:
		obj, ans, details = ds, dsAns, &metav1.StatusDetails{Name: DaemonSetName, Group: "apps", Kind: "daemonsets"}
	default:
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource", nil)
		return
	}
	if r.Method != http.MethodGet {
		status(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "only get", nil)
		return
	}
	switch ans {
	case ServeObject:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(obj)
	case NotFound:
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, details.Kind+" \""+details.Name+"\" not found", details)
	case Forbidden:
		status(w, http.StatusForbidden, metav1.StatusReasonForbidden,
			details.Kind+" \""+details.Name+"\" is Forbidden: User \"system:serviceaccount:kube-system:default\" cannot get resource", details)
	case Hang:
		select {
		case <-r.Context().Done():
		case <-f.stop:
		case <-time.After(time.Minute):
		}
	case BareNotFound:
		http.Error(w, "404 page not found", http.StatusNotFound)
	case NotFoundOther:
		other := *details
		other.Name += "-other"
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, other.Kind+" \""+other.Name+"\" not found", &other)
	case Malformed:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"DaemonSet","apiVersion":"apps/v1","metadata":{"name":`))
	}
}

// watch serves a watch of the DaemonSet by name: its ADDED event, then
// what SendWatch sends, until the client or the server goes.
func (f *Server) watch(w http.ResponseWriter, r *http.Request, ds appsv1.DaemonSet) {
	q := r.URL.Query()
	if q.Get("watch") != "true" || q.Get("fieldSelector") != "metadata.name="+DaemonSetName {
		status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "only a watch of "+DaemonSetName+" by name", nil)
		return
	}
	events := make(chan []byte, 16)
	from := q.Get("resourceVersion")
	f.mu.Lock()
	f.WatchRVs = append(f.WatchRVs, from)
	end, gone := f.endWatch, f.DSGone
	var replay [][]byte
	expired := false
	if from != "" {
		n, err := strconv.Atoi(from)
		expired = err != nil || n < f.Compacted
		for _, ev := range f.history {
			if ev.rv > n {
				replay = append(replay, ev.raw)
			}
		}
	}
	ds.ResourceVersion = strconv.Itoa(f.rv)
	f.watchers = append(f.watchers, events)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.watchers = slices.DeleteFunc(f.watchers, func(c chan []byte) bool { return c == events })
	}()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	switch {
	case expired:
		_ = enc.Encode(map[string]any{"type": "ERROR", "object": metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
			Message: "too old resource version: " + from, Reason: metav1.StatusReasonExpired, Code: http.StatusGone,
		}})
		w.(http.Flusher).Flush()
		f.Watches.Add(1)
		return
	case from != "":
		for _, raw := range replay {
			_, _ = w.Write(append(raw, '\n'))
		}
	case !gone:
		_ = enc.Encode(map[string]any{"type": "ADDED", "object": ds})
	}
	w.(http.Flusher).Flush()
	f.Watches.Add(1)
	for {
		select {
		case ev := <-events:
			_, _ = w.Write(append(ev, '\n'))
			w.(http.Flusher).Flush()
		case <-r.Context().Done():
			return
		case <-end:
			return
		case <-f.stop:
			return
		}
	}
}

func status(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string, d *metav1.StatusDetails) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Reason: reason, Details: d, Code: int32(code),
	})
}
