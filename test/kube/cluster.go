package kube

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leakguard/leakguard/test/runtime"
)

// NodeName is the node's name: kubelet refuses a loopback node IP, the name
// "localhost" resolves to one (the apiserver reaches kubelet by hostname).
const NodeName = "localhost"

// ServiceCIDR holds the cluster's service IPs; ServiceIP is the kubernetes
// service's, DNAT'ed to the apiserver (there is no kube-proxy). One cluster
// at a time on the machine (a lock), so a fixed range is no conflict.
const (
	ServiceCIDR = "10.243.255.0/24"
	ServiceIP   = "10.243.255.1"
)

// Options configure a cluster.
type Options struct {
	// Chain is the CNI setup of the node (runtime.NewCNI): by default the
	// bridge primary alone, as a node before a CNI add-on chains itself in.
	Chain runtime.ChainOptions
	// NRI configures containerd's NRI (enabled by default).
	NRI runtime.NRIOptions
}

// Cluster is a private single-node Kubernetes cluster on 127.0.0.1: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and a kubelet
// (node NodeName) over a private containerd.
type Cluster struct {
	Tools      Tools
	Network    *runtime.Network
	CNI        *runtime.CNI
	Containerd *runtime.Containerd
	// Images are the pause and busybox test images, imported into
	// containerd's k8s.io namespace.
	Images runtime.TestImages

	// Dir holds the cluster's files (below the containerd instance dir, so
	// test/runtime's teardown and stale sweep cover it).
	Dir string
	// APIServer is the apiserver's URL, Kubeconfig an admin kubeconfig.
	APIServer  string
	Kubeconfig string
	// KubeletRootDir is kubelet's --root-dir (a shared bind mount).
	KubeletRootDir string
	// PodLogsDir is kubelet's podLogsDir.
	PodLogsDir string
	// StartTime is how long Start took, from the first process started
	// to the node Ready.
	StartTime time.Duration

	pki     *pki
	admin   keyPair
	http    *http.Client
	record  *hostRecord
	daemons []*runtime.Daemon
	kubelet *runtime.Daemon
}

// Start brings up a cluster and registers its teardown (t.Cleanup, failed
// or not): kubelet and the control plane stop, the DNAT rule and what
// kubelet wrote on the host go, then test/runtime tears down containerd, its
// pods and the instance dir. It returns once the node is Ready, schedulable
// and the default service account exists.
func Start(t testing.TB, tools Tools, opts Options) *Cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("a test cluster needs root")
	}
	lockHost(t)
	begin := time.Now()

	c := &Cluster{Tools: tools}
	c.Network = runtime.NewNetwork(t)
	cniDir := t.TempDir()
	c.CNI = runtime.NewCNI(t, tools.Runtime, c.Network, cniDir, opts.Chain)
	var err error
	if c.record, err = newHostRecord(); err != nil {
		t.Fatalf("cluster host record: %v", err)
	}
	// Undone last, after containerd's teardown (registered below) ran the
	// pods' DELs.
	t.Cleanup(func() {
		if err := c.record.undo(tools.Iptables); err != nil {
			t.Errorf("teardown: host changes of the cluster: %v", err)
		}
	})
	// The CNI dirs in a shared mount, as on a node whose / is shared
	// (systemd's default): a DaemonSet may mount them with
	// HostToContainer propagation (leakguard's netns pins appear below its
	// state dir), which runc refuses on a private mount.
	if err := c.record.bindShared(cniDir); err != nil {
		t.Fatal(err)
	}
	// StartContainerd first sweeps killed runs' instances (their kubelets
	// and control planes die with them); only then are their host changes
	// undone, with nothing left to redo them.
	c.Containerd = runtime.StartContainerd(t, tools.Runtime, runtime.ContainerdOptions{CNI: c.CNI, NRI: opts.NRI})
	sweepStale(t, tools.Iptables, c.record)
	if err := c.record.setInstance(c.Containerd.Dir); err != nil {
		t.Fatal(err)
	}
	c.Dir = filepath.Join(c.Containerd.Dir, "kube")
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	err = os.MkdirAll(c.path("images"), 0o700)
	if err == nil {
		c.Images, err = runtime.BuildTestImages(c.path("images"), tools.Runtime)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.Containerd.ImportImages(t, c.Images.Pause, c.Images.Busybox)
	t.Cleanup(func() { c.teardown(t) })
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	c.WaitNodeReady(t, 60*time.Second)
	c.waitDefaultServiceAccount(t, 30*time.Second)
	c.StartTime = time.Since(begin)
	t.Logf("cluster up in %v (apiserver %s, node %s)", c.StartTime.Round(time.Millisecond), c.APIServer, NodeName)
	return c
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

// ports are the control plane's and kubelet's listeners, all on 127.0.0.1.
type ports struct {
	etcdClient, etcdPeer, apiserver, controllerManager, scheduler, kubelet, kubeletHealthz int
}

// freePorts picks free loopback ports (held open together so they differ).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func (c *Cluster) start() error {
	p, err := freePorts(7)
	if err != nil {
		return err
	}
	pt := ports{p[0], p[1], p[2], p[3], p[4], p[5], p[6]}
	c.APIServer = fmt.Sprintf("https://127.0.0.1:%d", pt.apiserver)
	if err := c.writePKI(); err != nil {
		return err
	}
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + c.path("home"), "TMPDIR=" + c.path("tmp")}
	for _, d := range []string{"home", "tmp", "etcd", "logs"} {
		if err := os.MkdirAll(c.path(d), 0o700); err != nil {
			return err
		}
	}

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", pt.etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", pt.etcdPeer)
	etcd, err := c.startDaemon("etcd", env, c.Tools.Etcd,
		"--name=default", "--data-dir="+c.path("etcd", "data"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	err = etcd.WaitUntil(30*time.Second, func() error { return httpOK(http.DefaultClient, etcdURL+"/health") })
	if err != nil {
		return err
	}

	apiserver, err := c.startDaemon("kube-apiserver", env, append([]string{c.Tools.KubeAPIServer}, c.apiserverArgs(etcdURL, pt)...)...)
	if err != nil {
		return err
	}
	// The kubernetes service IP leads to the apiserver, for hostNetwork pods.
	if err := c.record.addDNAT(c.Tools.Iptables, ServiceIP, pt.apiserver); err != nil {
		return err
	}
	// The rest retry until the apiserver answers: start them now.
	if err := c.startControllers(env, pt); err != nil {
		return err
	}
	if err := c.startKubelet(env, pt); err != nil {
		return err
	}
	return apiserver.WaitUntil(60*time.Second, func() error { return httpOK(c.http, c.APIServer+"/readyz") })
}

func (c *Cluster) startDaemon(name string, env []string, argv ...string) (*runtime.Daemon, error) {
	d, err := runtime.StartDaemon(name, c.path("logs", name+".log"), argv, env)
	if err != nil {
		return nil, err
	}
	// Stopped with its process group: kubelet runs in a script under unshare.
	d.StopGroup = true
	c.daemons = append(c.daemons, d)
	return d, nil
}

func (c *Cluster) apiserverArgs(etcdURL string, pt ports) []string {
	pk := c.pki.dir
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", pt.apiserver),
		"--cert-dir=" + c.path("apiserver"),
		"--tls-cert-file=" + filepath.Join(pk, "apiserver.crt"), "--tls-private-key-file=" + filepath.Join(pk, "apiserver.key"),
		"--client-ca-file=" + c.pki.CAFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(pk, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(pk, "sa.key"),
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--endpoint-reconciler-type=none", "--allow-privileged=true", "--authorization-mode=Node,RBAC",
		"--kubelet-preferred-address-types=Hostname,InternalIP",
		"--kubelet-client-certificate=" + filepath.Join(pk, "apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + filepath.Join(pk, "apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + c.pki.CAFile,
		"--profiling=false",
	}
}

func (c *Cluster) startControllers(env []string, pt ports) error {
	pk := c.pki.dir
	_, err := c.startDaemon("kube-controller-manager", env, c.Tools.KubeControllerManager,
		"--kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", pt.controllerManager),
		"--cert-dir="+c.path("controller-manager"),
		"--leader-elect=false",
		"--service-account-private-key-file="+filepath.Join(pk, "sa.key"),
		"--root-ca-file="+c.pki.CAFile,
		"--cluster-signing-cert-file="+c.pki.CAFile, "--cluster-signing-key-file="+filepath.Join(pk, "ca.key"),
		"--allocate-node-cidrs", "--cluster-cidr="+c.Network.Subnet.String(), "--node-cidr-mask-size=24",
		"--service-cluster-ip-range="+ServiceCIDR,
		"--flex-volume-plugin-dir="+c.path("flexvolume"),
		"--profiling=false")
	if err != nil {
		return err
	}
	_, err = c.startDaemon("kube-scheduler", env, c.Tools.KubeScheduler,
		"--kubeconfig="+c.path("scheduler.kubeconfig"),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", pt.scheduler),
		"--leader-elect=false", "--profiling=false")
	return err
}

// httpOK GETs url and wants 200.
func httpOK(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// Get GETs an API path (e.g. /api/v1/nodes) as the cluster admin and
// returns the body of a 200 answer.
func (c *Cluster) Get(path string) ([]byte, error) {
	resp, err := c.http.Get(c.APIServer + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// GetJSON GETs an API path into v.
func (c *Cluster) GetJSON(path string, v any) error {
	body, err := c.Get(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, v)
}

// writePKI makes the CA, every certificate and the kubeconfigs.
func (c *Cluster) writePKI() error {
	var err error
	if c.pki, err = newPKI(c.path("pki")); err != nil {
		return err
	}
	if err := c.pki.serviceAccountKey(); err != nil {
		return err
	}
	loopback := []net.IP{net.ParseIP("127.0.0.1")}
	specs := []certSpec{
		{name: "apiserver", cn: "kube-apiserver", server: true,
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			ips: append(loopback, net.ParseIP(ServiceIP))},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{name: "kubelet", cn: "system:node:" + NodeName, orgs: []string{"system:nodes"}, client: true},
		{name: "kubelet-serving", cn: NodeName, server: true, dns: []string{NodeName}, ips: loopback},
		// The controller-manager as a cluster admin: its controllers do not
		// need per-controller service-account credentials in a test.
		{name: "controller-manager", cn: "system:kube-controller-manager", orgs: []string{"system:masters"}, client: true},
		{name: "scheduler", cn: "system:kube-scheduler", client: true},
		{name: "admin", cn: "leakguard-test-admin", orgs: []string{"system:masters"}, client: true},
	}
	pairs := map[string]keyPair{}
	for _, s := range specs {
		kp, err := c.pki.issue(s)
		if err != nil {
			return err
		}
		pairs[s.name] = kp
	}
	ca, err := os.ReadFile(c.pki.CAFile)
	if err != nil {
		return err
	}
	for file, user := range map[string]string{
		"admin.kubeconfig": "admin", "kubelet.kubeconfig": "kubelet",
		"controller-manager.kubeconfig": "controller-manager", "scheduler.kubeconfig": "scheduler",
	} {
		if err := writeKubeconfig(c.path(file), c.APIServer, ca, pairs[user]); err != nil {
			return err
		}
	}
	c.Kubeconfig = c.path("admin.kubeconfig")
	c.admin = pairs["admin"]
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.X509KeyPair(c.admin.CertPEM, c.admin.KeyPEM)
	if err != nil {
		return err
	}
	c.http = &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}},
	}
	return nil
}

// writeKubeconfig writes a kubeconfig (JSON: YAML's superset) with the
// certificates embedded.
func writeKubeconfig(path, server string, ca []byte, kp keyPair) error {
	cfg := map[string]any{
		"apiVersion": "v1", "kind": "Config",
		"clusters": []any{map[string]any{"name": "test", "cluster": map[string]any{
			"server": server, "certificate-authority-data": ca}}},
		"users": []any{map[string]any{"name": "test", "user": map[string]any{
			"client-certificate-data": kp.CertPEM, "client-key-data": kp.KeyPEM}}},
		"contexts":        []any{map[string]any{"name": "test", "context": map[string]any{"cluster": "test", "user": "test"}}},
		"current-context": "test",
	}
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o600)
}
