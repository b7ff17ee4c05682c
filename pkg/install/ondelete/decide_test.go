package ondelete_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leakguard/leakguard/pkg/install/ondelete"
	"github.com/leakguard/leakguard/test/apifake"
)

// Each answer of the API server, and what the agent makes of it: only a
// DaemonSet that is gone or being deleted uninstalls.
func TestDecide(t *testing.T) {
	cases := []struct {
		name      string
		setup     func(f *apifake.Server)
		uninstall bool
		reason    string
	}{
		{"daemonset gone", func(f *apifake.Server) { f.DSAnswer = apifake.NotFound }, true, "is gone"},
		{"daemonset deleting", func(f *apifake.Server) {
			now := metav1.NewTime(time.Now())
			f.DS.DeletionTimestamp = &now
			f.DS.Finalizers = []string{"foregroundDeletion"}
		}, true, "being deleted"},
		{"daemonset present", func(*apifake.Server) {}, false, "exists: a restart or an upgrade"},
		{"daemonset replaced under the same name", func(f *apifake.Server) { f.DS.UID = "another-uid" }, false, "was replaced"},
		{"daemonset apifake.Forbidden", func(f *apifake.Server) { f.DSAnswer = apifake.Forbidden }, false, "access denied"},
		{"pod apifake.Forbidden", func(f *apifake.Server) { f.PodAnswer = apifake.Forbidden }, false, "access denied"},
		{"pod not found", func(f *apifake.Server) { f.PodAnswer = apifake.NotFound }, false, "cannot read pod"},
		{"pod not owned by a daemonset", func(f *apifake.Server) {
			f.Pod.OwnerReferences[0].Kind = "ReplicaSet"
			f.Pod.OwnerReferences[0].APIVersion = "apps/v1"
		}, false, "not owned by a DaemonSet"},
		{"apifake.Malformed daemonset", func(f *apifake.Server) { f.DSAnswer = apifake.Malformed }, false, "cannot read DaemonSet"},
		{"apifake.Malformed pod", func(f *apifake.Server) { f.PodAnswer = apifake.Malformed }, false, "cannot read pod"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := apifake.New(t)
			f.Set(c.setup)
			v := ondelete.Decide(context.Background(), f.Config(t), 2*time.Second)
			if v.Uninstall != c.uninstall || !strings.Contains(v.Reason, c.reason) {
				t.Fatalf("Decide = %+v; want uninstall=%v, reason containing %q", v, c.uninstall, c.reason)
			}
			if f.BadAuth.Load() != 0 {
				t.Fatalf("%d requests without the service account's token", f.BadAuth.Load())
			}
		})
	}
}

// An API server that accepts the request and never answers: the agent
// gives up at its timeout and keeps everything.
func TestDecideHangingAPIServer(t *testing.T) {
	for _, which := range []string{"pod", "daemonset"} {
		t.Run(which, func(t *testing.T) {
			f := apifake.New(t)
			f.Set(func(f *apifake.Server) {
				if which == "pod" {
					f.PodAnswer = apifake.Hang
				} else {
					f.DSAnswer = apifake.Hang
				}
			})
			begin := time.Now()
			v := ondelete.Decide(context.Background(), f.Config(t), 500*time.Millisecond)
			took := time.Since(begin)
			if v.Uninstall || !strings.Contains(v.Reason, "did not answer in time") {
				t.Fatalf("Decide = %+v", v)
			}
			if took > 2*time.Second {
				t.Fatalf("Decide took %v with a 500ms timeout", took)
			}
		})
	}
}

// Nothing listens at the API server's address: keep.
func TestDecideUnreachable(t *testing.T) {
	f := apifake.New(t)
	c := f.Config(t)
	f.Srv.Close()
	v := ondelete.Decide(context.Background(), c, time.Second)
	if v.Uninstall || !strings.Contains(v.Reason, "cannot read pod") {
		t.Fatalf("Decide = %+v", v)
	}
}

// A wrong token is refused by the API server (401): keep.
func TestDecideWrongToken(t *testing.T) {
	f := apifake.New(t)
	if err := os.WriteFile(filepath.Join(f.SADir, "token"), []byte("expired"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := ondelete.Decide(context.Background(), f.Config(t), time.Second)
	if v.Uninstall || !strings.Contains(v.Reason, "access denied") || f.BadAuth.Load() == 0 {
		t.Fatalf("Decide = %+v (requests with a bad token: %d)", v, f.BadAuth.Load())
	}
}

// A CA that did not sign the API server's certificate: the TLS handshake
// fails, keep.
func TestDecideUntrustedServer(t *testing.T) {
	f := apifake.New(t)
	c := f.Config(t)
	c.CAFile = filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(c.CAFile, otherCA(t), 0o600); err != nil {
		t.Fatal(err)
	}
	v := ondelete.Decide(context.Background(), c, time.Second)
	if v.Uninstall || !strings.Contains(v.Reason, "certificate") || f.Hits.Load() != 0 {
		t.Fatalf("Decide = %+v (requests served: %d)", v, f.Hits.Load())
	}
}

// The environment and service account dir the in-cluster config needs;
// whatever is missing is named.
func TestConfigFromEnv(t *testing.T) {
	f := apifake.New(t)
	c := f.Config(t)
	if !strings.HasPrefix(c.Host, "https://127.0.0.1:") || c.Namespace != apifake.Namespace || c.Pod != apifake.PodName ||
		c.TokenFile != filepath.Join(f.SADir, "token") || c.CAFile != filepath.Join(f.SADir, "ca.crt") {
		t.Fatalf("config %+v", c)
	}
	for _, missing := range []string{ondelete.EnvHost, ondelete.EnvPort, ondelete.EnvNamespace, ondelete.EnvPod} {
		env := f.Env()
		_, err := ondelete.ConfigFromEnv(func(k string) string {
			if k == missing {
				return ""
			}
			return env(k)
		}, f.SADir)
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("without %s: %v", missing, err)
		}
	}
	for _, file := range []string{"token", "ca.crt"} {
		dir := t.TempDir()
		other := map[string]string{"token": "ca.crt", "ca.crt": "token"}[file]
		if err := os.WriteFile(filepath.Join(dir, other), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ondelete.ConfigFromEnv(f.Env(), dir); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("without %s: %v", file, err)
		}
	}
}

// otherCA is a self-signed CA (PEM) that signed nothing the server has.
func otherCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
