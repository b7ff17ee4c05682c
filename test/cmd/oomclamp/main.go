// Command oomclamp is an OCI runtime wrapper for the private dockerd of the
// runtime tests: it raises a negative process.oomScoreAdj in the bundle's
// config.json to 0, then execs the real runtime with the same arguments.
//
//	oomclamp [runc arguments...]     (OOMCLAMP_RUNTIME overrides /usr/sbin/runc)
//
// Why: the test VMs have no CAP_SYS_RESOURCE, so runc cannot lower a
// process's OOM score, and cri-dockerd asks -998 for every pod sandbox (as
// dockershim did); runc then fails the container. containerd has
// restrict_oom_score_adj for this; dockerd has nothing.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

const defaultRuntime = "/usr/sbin/runc"

func main() {
	runtime := os.Getenv("OOMCLAMP_RUNTIME")
	if runtime == "" {
		runtime = defaultRuntime
	}
	if bundle := bundleArg(os.Args[1:]); bundle != "" {
		if err := clamp(filepath.Join(bundle, "config.json")); err != nil {
			fmt.Fprintf(os.Stderr, "oomclamp: %v\n", err)
			os.Exit(1)
		}
	}
	args := append([]string{runtime}, os.Args[1:]...)
	err := syscall.Exec(runtime, args, os.Environ())
	fmt.Fprintf(os.Stderr, "oomclamp: exec %s: %v\n", runtime, err)
	os.Exit(1)
}

// bundleArg returns the value of --bundle/-b (runc create/run), or "".
func bundleArg(args []string) string {
	for i, a := range args {
		switch {
		case (a == "--bundle" || a == "-b") && i+1 < len(args):
			return args[i+1]
		case len(a) > len("--bundle=") && a[:len("--bundle=")] == "--bundle=":
			return a[len("--bundle="):]
		}
	}
	return ""
}

// clamp rewrites config.json only when its oomScoreAdj is negative. The
// document is kept as generic JSON so that no field the runtime reads is lost.
func clamp(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	proc, _ := spec["process"].(map[string]any)
	if proc == nil {
		return nil
	}
	adj, ok := proc["oomScoreAdj"].(float64)
	if !ok || adj >= 0 {
		return nil
	}
	proc["oomScoreAdj"] = 0
	out, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".oomclamp"
	if err := os.WriteFile(tmp, out, fi.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
