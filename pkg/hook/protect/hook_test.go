package protect

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/leakguard/leakguard/pkg/hook/bundle"
	"github.com/leakguard/leakguard/pkg/hook/hookpolicy"
)

var privileged = hookpolicy.Default()

func TestDecisions(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(*specs.Spec)
		mode     hookpolicy.Mode
		decision Decision
		reason   string
	}{
		{"privileged", func(*specs.Spec) {}, hookpolicy.ModePrivileged, Edited, ""},
		{"no CAP_SYS_ADMIN", func(s *specs.Spec) { s.Process.Capabilities.Bounding = []string{"CAP_CHOWN"} }, hookpolicy.ModePrivileged, Skipped, ReasonNotPrivileged},
		{"masked paths", func(s *specs.Spec) { s.Linux.MaskedPaths = []string{"/proc/kcore"} }, hookpolicy.ModePrivileged, Skipped, ReasonNotPrivileged},
		{"readonly paths", func(s *specs.Spec) { s.Linux.ReadonlyPaths = []string{"/proc/sys"} }, hookpolicy.ModePrivileged, Skipped, ReasonNotPrivileged},
		{"unprivileged, mode all", func(s *specs.Spec) { s.Linux.MaskedPaths = []string{"/proc/kcore"} }, hookpolicy.ModeAll, Edited, ""},
		{"host netns: no entry", func(s *specs.Spec) { s.Linux.Namespaces = nil }, hookpolicy.ModePrivileged, Skipped, ReasonHostNetwork},
		{"host netns: own path", func(s *specs.Spec) { s.Linux.Namespaces[0].Path = "/proc/self/ns/net" }, hookpolicy.ModeAll, Skipped, ReasonHostNetwork},
		{"annotation keep", func(s *specs.Spec) { s.Annotations = map[string]string{bundle.Annotation: "keep"} }, hookpolicy.ModeAll, Skipped, ReasonAnnotation},
		{"annotation other value", func(s *specs.Spec) { s.Annotations = map[string]string{bundle.Annotation: "yes"} }, hookpolicy.ModePrivileged, Edited, ""},
		{"mode off", func(*specs.Spec) {}, hookpolicy.ModeOff, Skipped, ReasonModeOff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newContainer(t)
			c.write(t, "etc/gssproxy/24-nfs-server.conf", on)
			tt.mutate(c.spec)
			r := c.run(t, hookpolicy.Policy{Mode: tt.mode})
			if r.Err != nil || r.Decision != tt.decision || r.Reason != tt.reason {
				t.Fatalf("got %+v; want decision %q reason %q", r, tt.decision, tt.reason)
			}
			if got := enabled(c.read(t, "etc/gssproxy/24-nfs-server.conf")); got != (tt.decision != Edited) {
				t.Fatalf("kernel_nfsd still on = %v after decision %s", got, r.Decision)
			}
		})
	}
}

func TestSeveralFiles(t *testing.T) {
	c := newContainer(t)
	files := map[string]bool{ // name -> gssproxy reads it
		"etc/gssproxy/gssproxy.conf":             true,
		"etc/gssproxy/24-nfs-server.conf":        true,
		"etc/gssproxy/99-late.conf":              true,
		"etc/gssproxy/00-early.conf":             true,
		"etc/gssproxy/nfs-server.conf":           false,
		"etc/gssproxy/100-x.conf":                false,
		"etc/gssproxy/24-x.conf.disabled":        false,
		"etc/gssproxy/24-x.conf~":                false,
		"etc/gssproxy/24-dir.conf/gssproxy.conf": false,
		"etc/gssproxy/sub/24-x.conf":             false,
		"etc/gssproxy.conf":                      false,
	}
	for name := range files {
		c.write(t, name, on)
	}
	r := c.run(t, privileged)
	if r.Err != nil || r.Decision != Edited || r.Settings != 4 {
		t.Fatalf("got %+v", r)
	}
	want := []string{"/etc/gssproxy/gssproxy.conf", "/etc/gssproxy/00-early.conf", "/etc/gssproxy/24-nfs-server.conf", "/etc/gssproxy/99-late.conf"}
	if !reflect.DeepEqual(r.Changed, want) {
		t.Fatalf("changed %q, want %q (gssproxy's read order)", r.Changed, want)
	}
	for name, read := range files {
		if enabled(c.read(t, name)) == read {
			t.Errorf("%s: read by gssproxy %v, but kernel_nfsd on after the hook = %v", name, read, !read)
		}
	}
	again := c.run(t, privileged)
	if again.Decision != Clean || len(again.Changed) != 0 {
		t.Fatalf("second run: %+v", again)
	}
}

func TestNothingToDo(t *testing.T) {
	c := newContainer(t)
	if r := c.run(t, privileged); r.Decision != Clean || r.Err != nil {
		t.Fatalf("empty etc/gssproxy: %+v", r)
	}
	c.write(t, "etc/gssproxy/gssproxy.conf", off)
	if r := c.run(t, privileged); r.Decision != Clean || r.Err != nil {
		t.Fatalf("kernel_nfsd already off: %+v", r)
	}
	c2 := newContainer(t)
	c2.write(t, "etc/os-release", "x")
	if r := c2.run(t, privileged); r.Decision != Clean || r.Err != nil {
		t.Fatalf("no gssproxy at all: %+v", r)
	}
}

func TestLoadFailure(t *testing.T) {
	for name, in := range map[string]string{
		"garbage":        "garbage",
		"missing bundle": `{"ociVersion":"1.0.2","id":"x","status":"creating","bundle":"/nonexistent/bundle"}`,
	} {
		if r := Run(strings.NewReader(in), privileged); r.Decision != Failed || r.Err == nil {
			t.Errorf("%s: %+v", name, r)
		}
		if r := Run(strings.NewReader(in), hookpolicy.Policy{Mode: hookpolicy.ModeOff}); r.Decision != Skipped || r.Err != nil {
			t.Errorf("%s with mode off: %+v", name, r)
		}
	}
}

func TestLogLine(t *testing.T) {
	c := newContainer(t)
	c.write(t, "etc/gssproxy/gssproxy.conf", on)
	var buf bytes.Buffer
	c.run(t, privileged).Log(slog.New(slog.NewJSONHandler(&buf, nil)))
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Fatalf("%d lines logged: %s", n, buf.String())
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["id"] != "ctr-TestLogLine" || line["privileged"] != true || line["decision"] != "edited" ||
		!reflect.DeepEqual(line["files_changed"], []any{"/etc/gssproxy/gssproxy.conf"}) || line["settings_changed"] != 1.0 {
		t.Fatalf("log line %s", buf.String())
	}
}

// TestLogLinePolicyError: a policy file the caller could not use shows up in
// the container's one line as policy_error, at level WARN at least.
func TestLogLinePolicyError(t *testing.T) {
	c := newContainer(t)
	r := c.run(t, privileged)
	r.PolicyErr = errors.New(`invalid hook policy "/etc/leakguard/hook.json": mode "x"`)
	var buf bytes.Buffer
	r.Log(slog.New(slog.NewJSONHandler(&buf, nil)))
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["decision"] != "clean" || line["level"] != "WARN" || line["policy_error"] != r.PolicyErr.Error() {
		t.Fatalf("log line %s", buf.String())
	}
}
