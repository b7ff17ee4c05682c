package guard

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/store"
)

// Status reports whether leakguard can do its job: the state dir is usable
// (a probe file can be written) and netlink answers. Failures are code 50.
// Wrapping a delegate, the delegate's STATUS runs first (skel calls STATUS
// only for cniVersion 1.1.0 and later, which the delegate shares) and errors
// of both are reported.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	return p.run("STATUS", args, func(inv *invocation, args *skel.CmdArgs) error {
		return joinErrors(p.forward(inv, "STATUS", args), p.status(inv, args))
	})
}

func (p *Plugin) status(inv *invocation, _ *skel.CmdArgs) error {
	st, err := store.Open(inv.conf.StateDir)
	if err == nil {
		err = probeWritable(st.Dir())
	}
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("state dir %s unusable: %v", inv.conf.StateDir, err), "")
	}
	if _, err := netlink.LinkByIndex(1); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("netlink unusable: %v", err), "")
	}
	return nil
}

func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".status-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}
