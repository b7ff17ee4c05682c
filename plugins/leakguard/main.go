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

	"github.com/leakguard/leakguard/pkg/guard"
)

func main() {
	p := guard.New(os.Stderr)
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    p.Add,
		Del:    p.Del,
		Check:  p.Check,
		GC:     p.GC,
		Status: p.Status,
	}, version.All, bv.BuildString("leakguard"))
}
