package delegate

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
)

// Runner executes delegates through libcni's pkg/invoke: the plugin is
// found in CNI_PATH and gets the wrapper's environment, with CNI_COMMAND and
// CNI_NETNS set by the call.
type Runner struct {
	// Exec runs the plugin; nil means invoke's default (a real exec).
	Exec invoke.Exec
}

// Find returns the path of plugin typ in CNI_PATH, or the error a runtime
// would give for a missing plugin.
func (r Runner) Find(typ string) (string, error) {
	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	if r.Exec != nil {
		return r.Exec.FindInPath(typ, paths)
	}
	return invoke.FindInPath(typ, paths)
}

// Add runs the delegate's ADD in netns and returns its result.
func (r Runner) Add(ctx context.Context, typ string, stdin []byte, netns string) (types.Result, error) {
	path, err := r.Find(typ)
	if err != nil {
		return nil, err
	}
	return invoke.ExecPluginWithResult(ctx, path, stdin, env{"ADD", netns}, r.Exec)
}

// Run runs a verb without a result (DEL, CHECK, GC, STATUS) with CNI_NETNS
// set to netns (empty for none: optional for DEL, unused by GC and STATUS).
func (r Runner) Run(ctx context.Context, verb, typ string, stdin []byte, netns string) error {
	path, err := r.Find(typ)
	if err != nil {
		return err
	}
	return invoke.ExecPluginWithoutResult(ctx, path, stdin, env{verb, netns}, r.Exec)
}

// env is the wrapper's environment with the verb and netns of the call.
// CNI_NETNS_OVERRIDE is dropped: leakguard sets it for its own DEL (see
// plugins/leakguard), and the delegate must keep its own checks; the netns a
// delegate gets is one leakguard proved, never its own.
type env struct {
	command, netns string
}

func (e env) AsEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "CNI_COMMAND", "CNI_NETNS", "CNI_NETNS_OVERRIDE":
			continue
		}
		out = append(out, kv)
	}
	return append(out, "CNI_COMMAND="+e.command, "CNI_NETNS="+e.netns)
}
