// Package podlink records which host-side links a pod owns and deletes them
// only after proving, object by object, that they are still the ones recorded.
//
// A host veth name is not an identity: plugins reuse deterministic names for
// the next sandbox of the same pod. A host link is the pod's only if its
// ifindex, name, MAC and kind match what was recorded at ADD and, for a veth,
// its peer is still in the recorded netns (IFLA_LINK_NETNSID) at the recorded
// peer ifindex, never in the host netns.
package podlink

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
)

// Identity is what proves a host link belongs to one attachment.
type Identity struct {
	Name      string `json:"name"`
	Index     int    `json:"ifindex"`
	MAC       string `json:"mac"`
	Kind      string `json:"kind"`
	NetNSID   int    `json:"linkNetnsid"`        // how the host names the pod netns
	PeerIndex int    `json:"peerIfindex"`        // ifindex of the peer inside the pod netns
	PeerName  string `json:"peerName,omitempty"` // container interface it pairs with
}

func (id Identity) String() string {
	return fmt.Sprintf("%s(ifindex %d, %s, %s, link-netnsid %d)", id.Name, id.Index, id.Kind, id.MAC, id.NetNSID)
}

// ContainerIface is a pod-side interface as seen inside the pod netns.
type ContainerIface struct {
	Name  string `json:"name"`
	Index int    `json:"ifindex"`
	MAC   string `json:"mac"`
	Kind  string `json:"kind"`
	// Moved is true for a device that exists on its own and was moved into
	// the pod (a physical NIC, an ENI, an SR-IOV VF, ...), as opposed to a
	// virtual device created for the pod. Moved devices go back to the host.
	Moved bool `json:"moved,omitempty"`
	// HostName is a moved device's name on the host before it was moved in
	// (the alias the main plugin left, as host-device does, else its name).
	HostName string `json:"hostName,omitempty"`
}

// ErrGone means no link exists at the recorded ifindex any more.
var ErrGone = errors.New("link is gone")

// MismatchError means a link exists at the recorded ifindex but is not the
// recorded one; it must be left alone.
type MismatchError struct {
	ID      Identity
	Reasons []string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("link at ifindex %d is not the recorded %s: %s", e.ID.Index, e.ID, strings.Join(e.Reasons, "; "))
}

// mismatches lists every way l differs from id.
func mismatches(id Identity, l netlink.Link) []string {
	a := l.Attrs()
	var r []string
	if a.Name != id.Name {
		r = append(r, fmt.Sprintf("name %q, recorded %q", a.Name, id.Name))
	}
	if mac := a.HardwareAddr.String(); !strings.EqualFold(mac, id.MAC) {
		r = append(r, fmt.Sprintf("MAC %s, recorded %s", mac, id.MAC))
	}
	if l.Type() != id.Kind {
		r = append(r, fmt.Sprintf("kind %s, recorded %s", l.Type(), id.Kind))
	}
	if id.Kind == "veth" {
		switch {
		case a.NetNsID < 0:
			r = append(r, "its peer is in the host netns")
		case a.NetNsID != id.NetNSID:
			r = append(r, fmt.Sprintf("peer link-netnsid %d, recorded %d", a.NetNsID, id.NetNSID))
		}
		if a.ParentIndex != id.PeerIndex {
			r = append(r, fmt.Sprintf("peer ifindex %d, recorded %d", a.ParentIndex, id.PeerIndex))
		}
	}
	return r
}
