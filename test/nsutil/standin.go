package nsutil

import (
	"github.com/vishvananda/netlink"

	"github.com/leakguard/leakguard/pkg/cniplugin/rescue"
)

// StandInClassifier is rescue.Classify that also takes devices of the given
// kinds for moved ones. Our test machines have no spare NIC and no dummy
// link type: an ifb device stands in for an ENI. Like rescue.Classify, the
// host name is the device's alias when set, else its name.
func StandInClassifier(kinds ...string) func(netlink.Link) (bool, string) {
	standIn := map[string]bool{}
	for _, k := range kinds {
		standIn[k] = true
	}
	return func(l netlink.Link) (bool, string) {
		if !standIn[l.Type()] {
			return rescue.Classify(l)
		}
		if a := l.Attrs(); a.Alias != "" {
			return true, a.Alias
		}
		return true, l.Attrs().Name
	}
}
