package k8s

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/leakguard/leakguard/test/kube"
)

// The host paths and port the manifests use (issue 10's contract: each
// mounted at the same path in the container, passed as args), and the
// volume names they are mounted by.
var hostVolumes = map[string]string{
	"cni-bin":    "/opt/cni/bin",
	"cni-conf":   "/etc/cni/net.d",
	"state":      "/run/leakguard",
	"hook":       "/usr/libexec/leakguard",
	"nri-socket": "/var/run/nri",
	"nri-state":  "/run/leakguard-nri",
}

const (
	metricsPort   = 9787
	daemonSetName = "leakguard"
	configMapName = "leakguard-config"
	namespace     = "kube-system"
	appLabel      = "app.kubernetes.io/name=leakguard"
)

// hostPrefixes are paths of the machine that no patched manifest may still
// name (the test would install into the machine's real CNI setup).
var hostPrefixes = []string{"/opt/cni", "/etc/cni", "/run/", "/var/run/", "/var/lib/", "/var/log/", "/usr/libexec/", "/etc/nri", "/opt/nri"}

// overlay is the kustomization pointing conf/kubernetes at the cluster's
// private dirs.
type overlay struct {
	Dir string
	// Paths maps each host path of hostVolumes to its private dir.
	Paths map[string]string
	Port  int
	// HookDir and NRIStateDir are the private dirs of the hook and of
	// leakguard-nri's state file.
	HookDir, NRIStateDir string
}

// newOverlay renders conf/kubernetes (kubectl kustomize, then JSON through
// a client-side dry run), moves every hostPath, mountPath, arg and
// ConfigMap value naming a host path of the contract to the cluster's
// private dirs and the metrics port to a free one, and writes a
// kustomization that has conf/kubernetes as its resource, those as patches
// and the image tag from bin/leakguard-image.ref.
func newOverlay(t testing.TB, c *kube.Cluster, extraArgs map[string]string, pluginConf map[string]any) *overlay {
	t.Helper()
	o := &overlay{
		Dir:         filepath.Join(c.Dir, "overlay"),
		HookDir:     filepath.Join(c.Dir, "hook"),
		NRIStateDir: filepath.Join(c.Dir, "nri-state"),
	}
	o.Paths = map[string]string{
		"/opt/cni/bin":           c.CNI.BinDir,
		"/etc/cni/net.d":         c.CNI.ConfDir,
		"/run/leakguard":         c.CNI.StateDir,
		"/usr/libexec/leakguard": o.HookDir,
		"/var/run/nri":           filepath.Dir(c.Containerd.NRISocket),
		"/run/leakguard-nri":     o.NRIStateDir,
	}
	for _, d := range []string{o.Dir, o.HookDir, o.NRIStateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if o.Port, err = freePort(); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(repoRoot, "conf", "kubernetes")
	rendered, err := c.Kubectl("kustomize", base)
	if err != nil {
		t.Fatalf("render %s: %v", base, err)
	}
	out, err := c.KubectlStdin(rendered, "create", "--dry-run=client", "-o", "json", "-f", "-")
	if err != nil {
		t.Fatalf("convert the rendered manifests to JSON: %v", err)
	}
	// One JSON object per document (a List when kubectl groups them).
	var items []map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			t.Fatalf("rendered manifests: %v", err)
		}
		if list, ok := obj["items"].([]any); ok && obj["kind"] == "List" {
			for _, it := range list {
				if m, ok := it.(map[string]any); ok {
					items = append(items, m)
				}
			}
			continue
		}
		items = append(items, obj)
	}
	var ds, cm map[string]any
	for _, it := range items {
		kind, _ := it["kind"].(string)
		name, _ := dig(it, "metadata", "name").(string)
		switch {
		case kind == "DaemonSet" && name == daemonSetName:
			ds = it
		case kind == "ConfigMap" && name == configMapName:
			cm = it
		}
	}
	if ds == nil || cm == nil {
		t.Fatalf("conf/kubernetes renders no DaemonSet %s and ConfigMap %s", daemonSetName, configMapName)
	}
	spec, _ := dig(ds, "spec", "template", "spec").(map[string]any)
	o.checkVolumes(t, spec)
	spec = o.move(spec).(map[string]any)
	setArgs(t, spec, "agent", extraArgs)
	data := o.move(cm["data"]).(map[string]any)
	if pluginConf != nil {
		setPluginConf(t, data, pluginConf)
	}
	for what, v := range map[string]any{"DaemonSet": spec, "ConfigMap": data} {
		if p := findHostPath(v); p != "" {
			t.Fatalf("the patched %s still names host path %q: the overlay does not know where to move it", what, p)
		}
	}

	rel, err := filepath.Rel(o.Dir, base)
	if err != nil {
		t.Fatal(err)
	}
	patch := func(path string, value any) string {
		raw, err := json.Marshal([]map[string]any{{"op": "replace", "path": path, "value": value}})
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	kustomization := map[string]any{
		"apiVersion": "kustomize.config.k8s.io/v1beta1",
		"kind":       "Kustomization",
		"resources":  []string{rel},
		"images":     []map[string]string{{"name": testImage.Repository(), "newTag": testImage.Tag()}},
		"patches": []map[string]any{
			{"target": map[string]string{"kind": "DaemonSet", "name": daemonSetName}, "patch": patch("/spec/template/spec", spec)},
			{"target": map[string]string{"kind": "ConfigMap", "name": configMapName}, "patch": patch("/data", data)},
		},
	}
	raw, err := json.MarshalIndent(kustomization, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	// JSON is YAML: kustomize reads it as is.
	if err := os.WriteFile(filepath.Join(o.Dir, "kustomization.yaml"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return o
}

// checkVolumes wants every hostPath volume to be one of the contract's,
// at its path.
func (o *overlay) checkVolumes(t testing.TB, spec map[string]any) {
	t.Helper()
	vols, _ := spec["volumes"].([]any)
	seen := map[string]bool{}
	for _, v := range vols {
		vol, _ := v.(map[string]any)
		name, _ := vol["name"].(string)
		path, ok := dig(vol, "hostPath", "path").(string)
		if !ok {
			continue
		}
		want, known := hostVolumes[name]
		if !known {
			t.Fatalf("hostPath volume %s (%s) is not one the e2e overlay can move", name, path)
		}
		if path != want {
			t.Fatalf("hostPath volume %s is %s, the contract says %s", name, path, want)
		}
		seen[name] = true
	}
	for name := range hostVolumes {
		if !seen[name] {
			t.Errorf("the DaemonSet has no hostPath volume %s", name)
		}
	}
}

// move rewrites every string naming a contract host path (at a path
// boundary, longest first: /run/leakguard-nri is not /run/leakguard) and the
// metrics port, in numbers and in ":9787"-style strings.
func (o *overlay) move(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = o.move(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = o.move(e)
		}
		return out
	case string:
		return o.moveString(x)
	case float64:
		if x == metricsPort {
			return float64(o.Port)
		}
		return x
	default:
		return v
	}
}

func (o *overlay) moveString(s string) string {
	prefixes := make([]string, 0, len(o.Paths))
	for p := range o.Paths {
		prefixes = append(prefixes, p)
	}
	slices.SortFunc(prefixes, func(a, b string) int { return len(b) - len(a) })
	var b strings.Builder
	for i := 0; i < len(s); {
		matched := false
		for _, p := range prefixes {
			if strings.HasPrefix(s[i:], p) && pathBoundary(s, i+len(p)) {
				b.WriteString(o.Paths[p])
				i += len(p)
				matched = true
				break
			}
		}
		if !matched {
			b.WriteByte(s[i])
			i++
		}
	}
	return strings.ReplaceAll(b.String(), ":"+strconv.Itoa(metricsPort), ":"+strconv.Itoa(o.Port))
}

// pathBoundary reports whether a path may end at s[i]: the string ends or
// a separator (/, a quote, a blank, ',', '=') follows.
func pathBoundary(s string, i int) bool {
	if i >= len(s) {
		return true
	}
	return strings.IndexByte("/\"' \t\n,=;:}]", s[i]) >= 0
}

// findHostPath returns a string in v that still names a machine path.
func findHostPath(v any) string {
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			if p := findHostPath(e); p != "" {
				return p
			}
		}
	case []any:
		for _, e := range x {
			if p := findHostPath(e); p != "" {
				return p
			}
		}
	case string:
		for _, p := range hostPrefixes {
			for i := strings.Index(x, p); i >= 0; {
				// A path starts there (not inside a moved one).
				if (i == 0 || strings.IndexByte("=\"' :,[{", x[i-1]) >= 0) && !strings.HasPrefix(x[i:], "/var/run/secrets/") {
					return x
				}
				next := strings.Index(x[i+1:], p)
				if next < 0 {
					break
				}
				i += 1 + next
			}
		}
	}
	return ""
}

// setArgs sets "--name=value" args of a container (replacing a present
// --name, in either the --name=value or the --name value form).
func setArgs(t testing.TB, spec map[string]any, container string, args map[string]string) {
	t.Helper()
	cs, _ := spec["containers"].([]any)
	for _, c := range cs {
		ctr, _ := c.(map[string]any)
		if ctr["name"] != container {
			continue
		}
		cur, _ := ctr["args"].([]any)
		for name, value := range args {
			flag := "--" + name
			var out []any
			for i := 0; i < len(cur); i++ {
				s, _ := cur[i].(string)
				if s == flag && i+1 < len(cur) {
					i++ // its value
					continue
				}
				if s == flag || strings.HasPrefix(s, flag+"=") {
					continue
				}
				out = append(out, cur[i])
			}
			out = append(out, flag+"="+value)
			cur = out
		}
		ctr["args"] = cur
		return
	}
	t.Fatalf("the DaemonSet has no container %s", container)
}

// setPluginConf merges keys into the ConfigMap's plugin config: the value
// that parses as a JSON object of leakguard's keys (stateDir...).
func setPluginConf(t testing.TB, data map[string]any, keys map[string]any) {
	t.Helper()
	for k, v := range data {
		s, _ := v.(string)
		var conf map[string]any
		if json.Unmarshal([]byte(s), &conf) != nil || conf == nil {
			continue
		}
		if _, ok := conf["stateDir"]; !ok {
			if _, ok := conf["type"]; !ok {
				continue
			}
		}
		for kk, vv := range keys {
			conf[kk] = vv
		}
		raw, err := json.Marshal(conf)
		if err != nil {
			t.Fatal(err)
		}
		data[k] = string(raw)
		return
	}
	t.Fatalf("the ConfigMap %s holds no plugin config (a JSON object with stateDir)", configMapName)
}

func dig(m map[string]any, keys ...string) any {
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// String is for failure messages.
func (o *overlay) String() string { return fmt.Sprintf("overlay %s (port %d)", o.Dir, o.Port) }
