// Package kubernetes holds no code: its test decodes the manifests of this
// directory strictly into k8s.io/api types and checks what the binaries
// rely on (mounts at their host paths, args, probes, the ConfigMap).
// k8s.io/api is only imported here, by a test: never by a shipped binary.
package kubernetes

import (
	"bytes"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/leakguard/leakguard/pkg/hook/hookpolicy"
	"github.com/leakguard/leakguard/pkg/install"
)

// The contract with the image and the e2e overlay (docs/kubernetes.md).
const (
	namespace = "kube-system"
	appLabel  = "app.kubernetes.io/name"
	appName   = "leakguard"
	imageRepo = "ghcr.io/leakguard/leakguard"
	portName  = "metrics"
)

// hostVolumes are the hostPath volumes, by name, and their host paths.
var hostVolumes = map[string]string{
	"cni-bin":    "/opt/cni/bin",
	"cni-conf":   "/etc/cni/net.d",
	"state":      "/run/leakguard",
	"hook":       "/usr/libexec/leakguard",
	"nri-socket": "/var/run/nri",
	"nri-state":  "/run/leakguard-nri",
}

// kustomization is the part of kustomize's Kustomization these files use;
// anything else in the file is refused.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
}

// manifests is every object of the directory, decoded.
type manifests struct {
	ds    *appsv1.DaemonSet
	cm    *corev1.ConfigMap
	sa    *corev1.ServiceAccount
	role  *rbacv1.Role
	bind  *rbacv1.RoleBinding
	files []string
}

func load(t *testing.T) manifests {
	t.Helper()
	var k kustomization
	strict(t, "kustomization.yaml", readFile(t, "kustomization.yaml"), &k)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" || k.Namespace != namespace {
		t.Fatalf("kustomization: %+v", k)
	}
	yamls, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	yamls = slices.DeleteFunc(yamls, func(s string) bool { return s == "kustomization.yaml" })
	listed := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(listed, yamls) {
		t.Fatalf("kustomization lists %v; the directory has %v", listed, yamls)
	}

	var m manifests
	m.files = yamls
	for _, f := range yamls {
		for i, doc := range splitDocs(readFile(t, f)) {
			where := f + " #" + strconv.Itoa(i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var obj metav1.Object
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 DaemonSet":
				m.ds = decodeOnce(t, where, doc, m.ds)
				obj = m.ds
			case "v1 ConfigMap":
				m.cm = decodeOnce(t, where, doc, m.cm)
				obj = m.cm
			case "v1 ServiceAccount":
				m.sa = decodeOnce(t, where, doc, m.sa)
				obj = m.sa
			case "rbac.authorization.k8s.io/v1 Role":
				m.role = decodeOnce(t, where, doc, m.role)
				obj = m.role
			case "rbac.authorization.k8s.io/v1 RoleBinding":
				m.bind = decodeOnce(t, where, doc, m.bind)
				obj = m.bind
			default:
				t.Fatalf("%s: unexpected kind %s %s", where, tm.APIVersion, tm.Kind)
			}
			if obj.GetNamespace() != namespace || obj.GetLabels()[appLabel] != appName {
				t.Errorf("%s: namespace %q labels %v, want %s and %s=%s", where, obj.GetNamespace(), obj.GetLabels(), namespace, appLabel, appName)
			}
		}
	}
	if m.ds == nil || m.cm == nil || m.sa == nil || m.role == nil || m.bind == nil {
		t.Fatalf("missing objects: DaemonSet %v ConfigMap %v ServiceAccount %v Role %v RoleBinding %v",
			m.ds != nil, m.cm != nil, m.sa != nil, m.role != nil, m.bind != nil)
	}
	return m
}

// decodeOnce decodes doc strictly into a new T; a second object of the
// same kind is refused.
func decodeOnce[T any](t *testing.T, where string, doc []byte, prev *T) *T {
	t.Helper()
	if prev != nil {
		t.Fatalf("%s: a second object of this kind", where)
	}
	v := new(T)
	strict(t, where, doc, v)
	return v
}

// strict decodes YAML into v, failing on unknown or duplicate fields.
func strict(t *testing.T, where string, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSep.Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecode: every document decodes strictly, each kind is known, once.
func TestDecode(t *testing.T) { load(t) }

// TestDaemonSet checks the pod spec against the contract.
func TestDaemonSet(t *testing.T) {
	m := load(t)
	ds := m.ds
	spec := ds.Spec.Template.Spec
	if ds.Name != appName {
		t.Errorf("DaemonSet name %q", ds.Name)
	}
	sel, tmpl := ds.Spec.Selector, ds.Spec.Template.Labels
	if sel == nil || sel.MatchLabels[appLabel] != appName || tmpl[appLabel] != appName {
		t.Errorf("selector %v, template labels %v", sel, tmpl)
	}
	if !spec.HostPID || !spec.HostNetwork {
		t.Errorf("hostPID %v hostNetwork %v, want both", spec.HostPID, spec.HostNetwork)
	}
	if spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy %q", spec.DNSPolicy)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == "" && tol.TolerationSeconds == nil
	}) {
		t.Errorf("tolerations %+v do not tolerate every taint (operator Exists, no key, no effect)", spec.Tolerations)
	}
	us := ds.Spec.UpdateStrategy
	if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil ||
		us.RollingUpdate.MaxUnavailable == nil || us.RollingUpdate.MaxUnavailable.String() != "1" {
		t.Errorf("updateStrategy %+v, want RollingUpdate with maxUnavailable 1", us)
	}
	// The agent's decision on SIGTERM is bounded at about 10 s, then the
	// hook waits for leakguard-nri to disconnect.
	if g := spec.TerminationGracePeriodSeconds; g == nil || *g < 20 {
		t.Errorf("terminationGracePeriodSeconds %v, want at least 20", g)
	}

	// RBAC: the service account may get pods and daemonsets in its namespace.
	if spec.ServiceAccountName != m.sa.Name {
		t.Errorf("serviceAccountName %q, ServiceAccount %q", spec.ServiceAccountName, m.sa.Name)
	}
	for _, need := range []struct{ group, resource string }{{"", "pods"}, {"apps", "daemonsets"}} {
		if !slices.ContainsFunc(m.role.Rules, func(r rbacv1.PolicyRule) bool {
			return slices.Contains(r.APIGroups, need.group) && slices.Contains(r.Resources, need.resource) && slices.Contains(r.Verbs, "get")
		}) {
			t.Errorf("Role %s does not grant get on %s (group %q)", m.role.Name, need.resource, need.group)
		}
	}
	if m.bind.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: m.role.Name}) ||
		!slices.Contains(m.bind.Subjects, rbacv1.Subject{Kind: "ServiceAccount", Name: m.sa.Name, Namespace: namespace}) {
		t.Errorf("RoleBinding %+v does not bind ServiceAccount %s to Role %s", m.bind, m.sa.Name, m.role.Name)
	}

	// Volumes: exactly the contract's hostPaths, plus the ConfigMap.
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		switch {
		case v.HostPath != nil:
			hostPaths[v.Name] = v.HostPath.Path
		case v.ConfigMap != nil:
			if v.ConfigMap.Name != m.cm.Name {
				t.Errorf("volume %s: ConfigMap %q, want %q", v.Name, v.ConfigMap.Name, m.cm.Name)
			}
		default:
			t.Errorf("volume %s: neither hostPath nor the ConfigMap", v.Name)
		}
	}
	if !maps.Equal(hostPaths, hostVolumes) {
		t.Errorf("hostPath volumes %v, want %v", hostPaths, hostVolumes)
	}

	names := []string{}
	for _, c := range spec.Containers {
		names = append(names, c.Name)
		checkContainer(t, c, hostPaths)
	}
	if !slices.Equal(names, []string{"agent", "nri"}) {
		t.Fatalf("containers %v, want agent and nri", names)
	}
	agent, nri := spec.Containers[0], spec.Containers[1]
	checkAgent(t, m, agent)
	checkNRI(t, agent, nri)
}

// checkContainer: the image, every hostPath mounted at its own path, every
// path arg inside a mount, resources set.
func checkContainer(t *testing.T, c corev1.Container, hostPaths map[string]string) {
	t.Helper()
	if c.Image != imageRepo || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("%s: image %q pull %q, want %q (the overlay sets the tag) and IfNotPresent", c.Name, c.Image, c.ImagePullPolicy, imageRepo)
	}
	for _, vm := range c.VolumeMounts {
		if hp, ok := hostPaths[vm.Name]; ok && vm.MountPath != hp {
			t.Errorf("%s: volume %s (host %s) mounted at %s: host paths must be mounted at the same path", c.Name, vm.Name, hp, vm.MountPath)
		}
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			t.Errorf("%s: volume %s uses a subPath", c.Name, vm.Name)
		}
	}
	for flag, val := range flags(c.Args) {
		if !filepath.IsAbs(val) {
			continue
		}
		if mountOf(c, val) == nil {
			t.Errorf("%s: --%s=%s is not inside any of its mounts", c.Name, flag, val)
		}
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okr := c.Resources.Requests[r]
		lim, okl := c.Resources.Limits[r]
		if !okr || !okl || req.Cmp(lim) > 0 || req.IsZero() {
			t.Errorf("%s: %s request %v limit %v: both must be set, request ≤ limit", c.Name, r, req.String(), lim.String())
		}
	}
	// Honest numbers: the agent's RSS is about 16 MiB.
	if lim := c.Resources.Limits[corev1.ResourceMemory]; lim.Cmp(resource.MustParse("32Mi")) < 0 {
		t.Errorf("%s: memory limit %v below 32Mi", c.Name, lim.String())
	}
}

func checkAgent(t *testing.T, m manifests, agent corev1.Container) {
	t.Helper()
	if !slices.Equal(agent.Command, []string{"/bin/leakguardctl"}) || len(agent.Args) == 0 || agent.Args[0] != "serve" {
		t.Errorf("agent: command %q args %q, want leakguardctl serve", agent.Command, agent.Args)
	}
	f := flags(agent.Args)
	for _, b := range []string{"install", "gc", "uninstall-on-delete"} {
		if v, ok := f[b]; !ok || v != "" {
			t.Errorf("agent: --%s missing (or given a value %q)", b, v)
		}
	}
	want := map[string]string{
		"cni-conf-dir": hostVolumes["cni-conf"], "cni-bin-dir": hostVolumes["cni-bin"],
		"hook-dir": hostVolumes["hook"], "state-dir": hostVolumes["state"],
		"nri-state": hostVolumes["nri-state"] + "/state.json", "reap": "owned",
	}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("agent: --%s=%q, want %q", k, f[k], v)
		}
	}
	if agent.SecurityContext == nil || agent.SecurityContext.Privileged == nil || !*agent.SecurityContext.Privileged {
		t.Errorf("agent: not privileged")
	}

	// The downward API: the pod's name and namespace, for --uninstall-on-delete.
	env := map[string]corev1.EnvVar{}
	for _, e := range agent.Env {
		env[e.Name] = e
	}
	for name, field := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
		e := env[name]
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field {
			t.Errorf("agent: env %s is not the downward API's %s: %+v", name, field, e)
		}
	}

	// --plugin-config comes from the ConfigMap (through an env var the
	// kubelet expands) and is what `leakguardctl install` accepts.
	pc := f["plugin-config"]
	envName, ok := strings.CutPrefix(pc, "$(")
	envName, ok2 := strings.CutSuffix(envName, ")")
	if !ok || !ok2 {
		t.Fatalf("agent: --plugin-config=%q, want $(VAR) of the ConfigMap's key", pc)
	}
	e := env[envName]
	if e.ValueFrom == nil || e.ValueFrom.ConfigMapKeyRef == nil || e.ValueFrom.ConfigMapKeyRef.Name != m.cm.Name {
		t.Fatalf("agent: env %s is not from ConfigMap %s: %+v", envName, m.cm.Name, e)
	}
	ref := e.ValueFrom.ConfigMapKeyRef
	if ref.Optional != nil && *ref.Optional {
		t.Errorf("agent: env %s optional: a missing key must stop the pod, not install an empty entry", envName)
	}
	raw, ok := m.cm.Data[ref.Key]
	if !ok {
		t.Fatalf("ConfigMap has no key %q", ref.Key)
	}
	entry, err := install.ParseEntry(raw)
	if err != nil {
		t.Fatalf("ConfigMap %s: leakguardctl install would refuse it: %v", ref.Key, err)
	}
	if sd := entry.Config().StateDir; sd != f["state-dir"] {
		t.Errorf("ConfigMap %s stateDir %q, agent --state-dir %q: the plugin and the agent must use one dir", ref.Key, sd, f["state-dir"])
	}

	// --hook-policy: a ConfigMap key, mounted, valid for leakguard-hook.
	hp := f["hook-policy"]
	vm := mountOf(agent, hp)
	if vm == nil {
		t.Fatalf("agent: --hook-policy=%q not mounted", hp)
	}
	rel, _ := filepath.Rel(vm.MountPath, hp)
	policy, ok := m.cm.Data[rel]
	if !ok {
		t.Fatalf("agent: --hook-policy=%s is not a key of the ConfigMap mounted at %s", hp, vm.MountPath)
	}
	p := filepath.Join(t.TempDir(), "hook.json")
	if err := os.WriteFile(p, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := hookpolicy.Load(p); err != nil {
		t.Errorf("ConfigMap %s: %v", rel, err)
	}

	// Probes on the named port that --listen binds.
	_, port, ok := strings.Cut(f["listen"], ":")
	if !ok {
		t.Fatalf("agent: --listen=%q has no port", f["listen"])
	}
	if len(agent.Ports) != 1 || agent.Ports[0].Name != portName || strconv.Itoa(int(agent.Ports[0].ContainerPort)) != port ||
		agent.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("agent: ports %+v, want %s = %s (--listen)", agent.Ports, portName, port)
	}
	for path, pr := range map[string]*corev1.Probe{"/healthz": agent.LivenessProbe, "/readyz": agent.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != path || pr.HTTPGet.Port.String() != portName {
			t.Errorf("agent: probe for %s is %+v, want httpGet %s on port %s", path, pr, path, portName)
		}
	}
}

func checkNRI(t *testing.T, agent, nri corev1.Container) {
	t.Helper()
	if !slices.Equal(nri.Command, []string{"/bin/leakguard-nri"}) {
		t.Errorf("nri: command %q", nri.Command)
	}
	a, f := flags(agent.Args), flags(nri.Args)
	want := map[string]string{
		"socket":      hostVolumes["nri-socket"] + "/nri.sock",
		"hook-path":   a["hook-dir"] + "/" + install.HookBinary,
		"hook-config": a["hook-dir"] + "/" + install.HookPolicyFile,
		"state-file":  a["nri-state"],
		// The agent installs the hook: wait for it, do not crash-loop.
		"wait-for-hook": "",
	}
	if !maps.Equal(f, want) {
		t.Errorf("nri: args %v, want %v", f, want)
	}
}

// TestFlagsExist: each flag of the args is one the binary knows (its
// --help lists it), so that the pod does not exit 2 on a typo.
func TestFlagsExist(t *testing.T) {
	m := load(t)
	bin := t.TempDir()
	for _, c := range m.ds.Spec.Template.Spec.Containers {
		name := filepath.Base(c.Command[0])
		exe := filepath.Join(bin, name)
		cmd := exec.Command("go", "build", "-o", exe, "../../plugins/"+name)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
		args := []string{"--help"}
		if name == "leakguardctl" {
			args = []string{c.Args[0], "--help"}
		}
		var out bytes.Buffer
		help := exec.Command(exe, args...)
		help.Stdout, help.Stderr = &out, &out
		if err := help.Run(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out.String())
		}
		for flag := range flags(c.Args) {
			if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(flag) + `\b`).Match(out.Bytes()) {
				t.Errorf("%s: --%s is not a flag of %s %s", c.Name, flag, name, strings.Join(args[:len(args)-1], " "))
			}
		}
	}
}

// flags turns --name=value and --name (booleans) into a map; positional
// args are skipped.
func flags(args []string) map[string]string {
	out := map[string]string{}
	for _, a := range args {
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(name, "=")
		out[k] = v
	}
	return out
}

// mountOf is the container's mount holding path (the longest mountPath
// that is path or one of its parents).
func mountOf(c corev1.Container, path string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i, vm := range c.VolumeMounts {
		mp := vm.MountPath
		if path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/") {
			if best == nil || len(mp) > len(best.MountPath) {
				best = &c.VolumeMounts[i]
			}
		}
	}
	return best
}
