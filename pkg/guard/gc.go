package guard

import (
	"github.com/containernetworking/cni/pkg/skel"
)

// GC is accepted so that CNI 1.1.0 runtimes can call it; garbage collection
// of stale records is not implemented yet, so it changes nothing.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	inv, err := p.start("GC", args)
	if err != nil {
		return err
	}
	defer inv.closeLog()
	inv.log.Info("GC: nothing collected (not implemented in this version)")
	return nil
}
