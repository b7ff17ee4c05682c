package hook

import (
	"encoding/json"
	"os"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/leakguard/leakguard/pkg/hook/hookpolicy"
)

// installedPath is where `make install` puts the hook (HOOK_DIR).
const installedPath = "/usr/libexec/leakguard/leakguard-hook"

// exampleHooks reads the createRuntime hooks of a shipped config.json example.
func exampleHooks(t *testing.T, file string) []specs.Hook {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if spec.Hooks == nil || len(spec.Hooks.CreateRuntime) != 1 {
		t.Fatalf("%s: want one createRuntime hook", file)
	}
	return spec.Hooks.CreateRuntime
}

// TestConfExamples: the shipped examples parse, name the installed binary and
// the createRuntime stage, and the example policy is valid.
func TestConfExamples(t *testing.T) {
	for _, f := range []string{"../../conf/runc/config-hooks.json", "../../conf/containerd/hooks.json"} {
		if h := exampleHooks(t, f); h[0].Path != installedPath {
			t.Errorf("%s: hook path %q, want %q", f, h[0].Path, installedPath)
		}
	}
	raw, err := os.ReadFile("../../conf/hooks.d/leakguard-hook.json")
	if err != nil {
		t.Fatal(err)
	}
	var hd struct {
		Version string
		Hook    specs.Hook
		When    struct{ Always bool }
		Stages  []string
	}
	if err := json.Unmarshal(raw, &hd); err != nil {
		t.Fatal(err)
	}
	if hd.Version != "1.0.0" || hd.Hook.Path != installedPath || !hd.When.Always || len(hd.Stages) != 1 || hd.Stages[0] != "createRuntime" {
		t.Errorf("conf/hooks.d/leakguard-hook.json: %+v", hd)
	}
	if _, err := hookpolicy.Load("../../conf/hook.json"); err != nil {
		t.Error(err)
	}
}
