// Command leakguard is a chained CNI plugin: placed after the plugin that
// creates a pod's interfaces, it records the pod's host-side links at ADD and
// removes them at DEL even when the pod's netns path is already gone (a
// leaked netns), after proving each link is the one it recorded.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
	bv "github.com/containernetworking/plugins/pkg/utils/buildversion"

	"github.com/leakguard/leakguard/pkg/cniplugin/guard"
)

func main() {
	// skel fails a DEL whose CNI_NETNS is the plugin's own netns, after the
	// verb ran. For leakguard that path (a reused /proc/<pid>/ns/net) is just
	// another gone netns, already judged by identity; failing would block
	// the chain's DEL forever. ADD keeps skel's check.
	if os.Getenv("CNI_COMMAND") == "DEL" {
		os.Setenv("CNI_NETNS_OVERRIDE", "1")
	}
	p := guard.New(os.Stderr)
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    p.Add,
		Del:    p.Del,
		Check:  p.Check,
		GC:     p.GC,
		Status: p.Status,
	}, version.All, bv.BuildString("leakguard"))
}
