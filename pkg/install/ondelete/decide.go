// Package ondelete tells, when the node agent is stopped, an uninstall from
// an upgrade or a restart, and uninstalls in the order that never breaks a
// pod. Kubernetes sends the same SIGTERM for `kubectl rollout restart`, a
// node drain or `kubectl delete daemonset`; only the API server knows which
// one it is. The agent asks it whether the DaemonSet that owns its pod is
// gone or being deleted: only then is leakguard removed. Anything less
// certain (the DaemonSet is there, the API cannot be reached in time, RBAC
// denies the read, the pod's identity is unknown) keeps everything: an
// entry whose binary is there is harmless, the reverse fails every pod's
// DEL.
package ondelete

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// DefaultServiceAccountDir is where the kubelet mounts the pod's
	// service account token and the cluster's CA.
	DefaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	// DefaultAPITimeout bounds the questions to the API server: past it,
	// the API is taken as unreachable and everything stays.
	DefaultAPITimeout = 4 * time.Second
)

// Environment variables the decision reads: the API server's (set by the
// kubelet in every pod) and the pod's own (from the downward API).
const (
	EnvHost      = "KUBERNETES_SERVICE_HOST"
	EnvPort      = "KUBERNETES_SERVICE_PORT"
	EnvNamespace = "POD_NAMESPACE"
	EnvPod       = "POD_NAME"
)

// Config is how to reach the API server and which pod the agent runs in.
type Config struct {
	// Host is the API server's URL (https://host:port).
	Host string
	// TokenFile and CAFile are the service account's token and the CA
	// that signed the API server's certificate.
	TokenFile, CAFile string
	// Namespace and Pod name the agent's pod.
	Namespace, Pod string
}

// ConfigFromEnv builds the in-cluster Config from getenv and the service
// account dir (DefaultServiceAccountDir in a pod); the error names what is
// missing.
func ConfigFromEnv(getenv func(string) string, saDir string) (Config, error) {
	c := Config{
		TokenFile: filepath.Join(saDir, "token"), CAFile: filepath.Join(saDir, "ca.crt"),
		Namespace: getenv(EnvNamespace), Pod: getenv(EnvPod),
	}
	host, port := getenv(EnvHost), getenv(EnvPort)
	var missing []string
	for _, v := range []struct{ name, val string }{{EnvHost, host}, {EnvPort, port}, {EnvNamespace, c.Namespace}, {EnvPod, c.Pod}} {
		if v.val == "" {
			missing = append(missing, v.name)
		}
	}
	if len(missing) > 0 {
		return c, fmt.Errorf("environment lacks %v (the DaemonSet passes POD_NAMESPACE and POD_NAME from the downward API)", missing)
	}
	for _, f := range []string{c.TokenFile, c.CAFile} {
		if _, err := os.Stat(f); err != nil {
			return c, fmt.Errorf("service account: %w", err)
		}
	}
	c.Host = "https://" + net.JoinHostPort(host, port)
	return c, nil
}

// Verdict is the decision and its reason, for the log.
type Verdict struct {
	// Uninstall: the owning DaemonSet is gone or being deleted.
	Uninstall bool
	// DaemonSet is namespace/name of the owner, when known.
	DaemonSet string
	// Reason says why, in words.
	Reason string
	// unanswered: kept because the API server gave no answer.
	unanswered bool
}

// Decide asks the API server, within timeout (DefaultAPITimeout when 0),
// whether the DaemonSet owning c's pod is gone (NotFound) or has a
// deletionTimestamp. Any error keeps everything; the Verdict's Reason says
// which.
func Decide(ctx context.Context, c Config, timeout time.Duration) Verdict {
	if timeout <= 0 {
		timeout = DefaultAPITimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client, err := newClient(c, timeout)
	if err != nil {
		return unanswered("", "cannot set up the API client: %v", err)
	}
	defer client.Client.CloseIdleConnections()

	var pod corev1.Pod
	err = client.Get().Namespace(c.Namespace).Resource("pods").Name(c.Pod).Do(ctx).Into(&pod)
	if err != nil {
		return unanswered("", "cannot read pod %s/%s: %s", c.Namespace, c.Pod, why(ctx, err))
	}
	owner := daemonSetOwner(&pod)
	if owner == nil {
		return keep("", "pod %s/%s is not owned by a DaemonSet", c.Namespace, c.Pod)
	}
	name := c.Namespace + "/" + owner.Name
	var ds appsv1.DaemonSet
	err = client.Get().AbsPath("/apis/apps/v1").Namespace(c.Namespace).Resource("daemonsets").Name(owner.Name).Do(ctx).Into(&ds)
	switch {
	case daemonSetGone(err, owner.Name):
		return Verdict{Uninstall: true, DaemonSet: name, Reason: "the DaemonSet is gone"}
	case err != nil:
		return unanswered(name, "cannot read DaemonSet %s: %s", name, why(ctx, err))
	case ds.UID != owner.UID:
		// Deleted and created again under the same name (delete -k then
		// apply -k): leakguard is still wanted, and the new pod installs it.
		return keep(name, "DaemonSet %s was replaced (uid %s, the pod's owner was %s)", name, ds.UID, owner.UID)
	case ds.DeletionTimestamp != nil:
		return Verdict{Uninstall: true, DaemonSet: name, Reason: "the DaemonSet is being deleted since " + ds.DeletionTimestamp.UTC().Format(time.RFC3339)}
	}
	return keep(name, "DaemonSet %s exists: a restart or an upgrade", name)
}

// daemonSetGone tells whether err is the API server's own NotFound for the
// DaemonSet name: a Status it sent (client-go also makes a NotFound of any
// bare 404, e.g. a proxy's, marking it an unexpected response) whose
// details name that object.
func daemonSetGone(err error, name string) bool {
	if !apierrors.IsNotFound(err) {
		return false
	}
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		return false
	}
	st := se.Status()
	d := st.Details
	if st.Code != http.StatusNotFound || d == nil || d.Name != name || d.Kind != "daemonsets" || d.Group != "apps" {
		return false
	}
	for _, c := range d.Causes {
		if c.Type == metav1.CauseTypeUnexpectedServerResponse {
			return false
		}
	}
	return true
}

func keep(ds, format string, args ...any) Verdict {
	return Verdict{DaemonSet: ds, Reason: fmt.Sprintf(format, args...)}
}

// unanswered is keep when the API server gave no answer (unreachable, or
// the agent's identity or rights are gone): a Watcher may know better.
func unanswered(ds, format string, args ...any) Verdict {
	v := keep(ds, format, args...)
	v.unanswered = true
	return v
}

// daemonSetOwner is the pod's owning DaemonSet (the controller reference
// when several), nil if none.
func daemonSetOwner(pod *corev1.Pod) *metav1.OwnerReference {
	var owner *metav1.OwnerReference
	for i, r := range pod.OwnerReferences {
		if r.Kind == "DaemonSet" && r.APIVersion == "apps/v1" && (owner == nil || (r.Controller != nil && *r.Controller)) {
			owner = &pod.OwnerReferences[i]
		}
	}
	return owner
}

// why words an API error for the log.
func why(ctx context.Context, err error) string {
	switch {
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return "the API server did not answer in time: " + err.Error()
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return "access denied (the service account needs get on pods and daemonsets in its namespace): " + err.Error()
	}
	return err.Error()
}
