package ondelete_test

import (
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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

const (
	testNS    = "kube-system"
	testPod   = "leakguard-x7k2p"
	testDS    = "leakguard"
	testToken = "test-token-0123"
	dsUID     = types.UID("6f1c3c51-0000-4000-8000-00000000d5e7")
)

// answer is how the fake API server answers one path.
type answer int

const (
	serveObject answer = iota // the object, as the API server's JSON
	notFound                  // 404 with a Status
	forbidden                 // 403 with a Status, as RBAC denies
	hang                      // never answers (until the client gives up)
	malformed                 // 200 with a body that is not JSON
)

// fakeAPI is an API server over TLS that knows one pod and its DaemonSet.
type fakeAPI struct {
	srv     *httptest.Server
	saDir   string
	mu      sync.Mutex
	pod     corev1.Pod
	ds      appsv1.DaemonSet
	podAns  answer
	dsAns   answer
	hits    atomic.Int64
	badAuth atomic.Int64
	stop    chan struct{}
}

// newFakeAPI starts the server and writes a service account dir (token and
// the server's CA) under a temp dir: nothing reads /var/run/secrets.
func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{stop: make(chan struct{})}
	yes := true
	f.pod = corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{
			Name: testPod, Namespace: testNS, UID: "0a0a0a0a-0000-4000-8000-000000000001",
			Labels: map[string]string{"app.kubernetes.io/name": "leakguard"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "DaemonSet", Name: testDS, UID: dsUID, Controller: &yes, BlockOwnerDeletion: &yes,
			}},
		},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "agent", Image: "ghcr.io/leakguard/leakguard:test"}}},
	}
	f.ds = appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{Kind: "DaemonSet", APIVersion: "apps/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: testDS, Namespace: testNS, UID: dsUID, Generation: 2},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "leakguard"}},
		},
	}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		close(f.stop)
		f.srv.Close()
	})
	f.saDir = t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	for name, data := range map[string][]byte{"token": []byte(testToken), "ca.crt": ca, "namespace": []byte(testNS)} {
		if err := os.WriteFile(filepath.Join(f.saDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fakeAPI) set(fn func(f *fakeAPI)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// env is the pod's environment as the kubelet and the downward API set it.
func (f *fakeAPI) env() func(string) string {
	host, port, _ := net.SplitHostPort(f.srv.Listener.Addr().String())
	vars := map[string]string{
		ondelete.EnvHost: host, ondelete.EnvPort: port,
		ondelete.EnvNamespace: testNS, ondelete.EnvPod: testPod,
	}
	return func(k string) string { return vars[k] }
}

func (f *fakeAPI) config(t *testing.T) ondelete.Config {
	t.Helper()
	c, err := ondelete.ConfigFromEnv(f.env(), f.saDir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	if r.Header.Get("Authorization") != "Bearer "+testToken {
		f.badAuth.Add(1)
		status(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized", nil)
		return
	}
	f.mu.Lock()
	pod, ds, podAns, dsAns := f.pod, f.ds, f.podAns, f.dsAns
	f.mu.Unlock()
	var obj any
	var ans answer
	var details *metav1.StatusDetails
	switch r.URL.Path {
	case "/api/v1/namespaces/" + testNS + "/pods/" + testPod:
		obj, ans, details = pod, podAns, &metav1.StatusDetails{Name: testPod, Kind: "pods"}
	case "/apis/apps/v1/namespaces/" + testNS + "/daemonsets/" + testDS:
		obj, ans, details = ds, dsAns, &metav1.StatusDetails{Name: testDS, Group: "apps", Kind: "daemonsets"}
	default:
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource", nil)
		return
	}
	if r.Method != http.MethodGet {
		status(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "only get", nil)
		return
	}
	switch ans {
	case serveObject:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(obj)
	case notFound:
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, details.Kind+" \""+details.Name+"\" not found", details)
	case forbidden:
		status(w, http.StatusForbidden, metav1.StatusReasonForbidden,
			details.Kind+" \""+details.Name+"\" is forbidden: User \"system:serviceaccount:kube-system:default\" cannot get resource", details)
	case hang:
		select {
		case <-r.Context().Done():
		case <-f.stop:
		case <-time.After(time.Minute):
		}
	case malformed:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"DaemonSet","apiVersion":"apps/v1","metadata":{"name":`))
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
