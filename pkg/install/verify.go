package install

import (
	"crypto/sha256"
	"fmt"

	"github.com/containernetworking/cni/libcni"
)

func sha(b []byte) [sha256.Size]byte { return sha256.Sum256(b) }

// verifyChain checks what is about to be written as the runtime will read
// it: a conflist libcni loads, with the primary's name and cniVersion, the
// primary's plugins in their order, and leakguard last.
func verifyChain(out []byte, src *confFile) error {
	got, err := libcni.ConfListFromBytes(out)
	if err != nil {
		return fmt.Errorf("result does not load: %w", err)
	}
	var want *libcni.NetworkConfigList
	if src.IsList {
		want, err = libcni.ConfListFromBytes(src.Data)
	} else {
		var conf *libcni.PluginConfig
		conf, err = libcni.ConfFromBytes(src.Data) //nolint:staticcheck // the runtimes' own conversion
		if err == nil {
			want, err = libcni.ConfListFromConf(conf) //nolint:staticcheck // as above
		}
	}
	if err != nil {
		return fmt.Errorf("primary does not load: %w", err)
	}
	if got.Name != want.Name || got.CNIVersion != want.CNIVersion {
		return fmt.Errorf("name/cniVersion %q/%q, primary has %q/%q", got.Name, got.CNIVersion, want.Name, want.CNIVersion)
	}
	n := len(got.Plugins)
	if n == 0 || got.Plugins[n-1].Network.Type != PluginType {
		return fmt.Errorf("leakguard is not the last plugin")
	}
	i := 0
	for _, p := range want.Plugins {
		if p.Network.Type == PluginType {
			continue
		}
		if i >= n-1 || got.Plugins[i].Network.Type != p.Network.Type {
			return fmt.Errorf("the primary's plugins are not kept in order")
		}
		i++
	}
	if i != n-1 {
		return fmt.Errorf("%d plugins besides leakguard, primary has %d", n-1, i)
	}
	return nil
}
