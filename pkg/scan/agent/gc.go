package agent

import (
	"encoding/json"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/leakguard/leakguard/pkg/cniplugin/guard"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
)

// gcNetwork runs leakguard's GC for one network, in this process, through
// guard (the code the plugin's GC verb runs), with no list of valid
// attachments: only attachments whose netns is provably orphaned (reachable
// by nothing, gone from its path) are reaped, and tombstones whose links are
// gone dropped.
//
// Not libcni's GCNetworkList: it issues a DEL for every cached attachment
// of the network missing from the list it is given, and the agent has no
// list (only the runtime knows which sandboxes live), so it would tear down
// every running pod; and it runs GC on every plugin of the chain. Not an
// exec of the plugin through the chain's config either: the plugin's GC
// verb needs the network's cniVersion to be 1.1.0, which most primaries are
// not, while guard's GC works on leakguard's own records whatever the
// network's version.
func (a *Agent) gcNetwork(network string) (int, error) {
	if a.GCFunc != nil {
		return a.GCFunc(network)
	}
	conf := map[string]any{
		"cniVersion": "1.1.0", "name": network, "type": "leakguard",
		"stateDir": a.opts.StateDir,
	}
	if a.opts.PinDir != "" {
		conf["pinDir"] = a.opts.PinDir
	}
	stdin, err := json.Marshal(conf)
	if err != nil {
		return 0, err
	}
	p := guard.New(a.opts.Stderr)
	n := 0
	p.GCReaped = func(k record.Key) {
		n++
		a.log.Info("GC reaped a stale attachment", "attachment", k.String())
	}
	err = a.do(func() error { return p.GC(&skel.CmdArgs{StdinData: stdin}) })
	return n, err
}
