// Package podlink owns link identity for an attachment: the host-side links
// a pod owns and the interfaces inside its netns. It builds an identity from
// a netlink link, compares a recorded identity with what is there now, and
// deletes a link only after proving it is still the recorded one. Every
// caller (DEL, GC, rescue, the scan and its reap) asks it, so they all agree.
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

// HostIdentity is the identity of host link l as it is now. For a veth,
// IFLA_LINK is the peer's ifindex in the netns IFLA_LINK_NETNSID names.
func HostIdentity(l netlink.Link) Identity {
	a := l.Attrs()
	return Identity{
		Name: a.Name, Index: a.Index, MAC: a.HardwareAddr.String(), Kind: l.Type(),
		NetNSID: a.NetNsID, PeerIndex: a.ParentIndex,
	}
}

// Compare lists every way the observed host link differs from the recorded
// one; none means it is the recorded link. PeerName is not compared: the
// host cannot see it.
func Compare(recorded, observed Identity) []string {
	var r []string
	if observed.Index != recorded.Index {
		r = append(r, fmt.Sprintf("ifindex %d, recorded %d", observed.Index, recorded.Index))
	}
	r = append(r, compareCommon(recorded.Name, recorded.MAC, recorded.Kind, observed.Name, observed.MAC, observed.Kind)...)
	if recorded.Kind == "veth" {
		switch {
		case observed.NetNSID < 0:
			r = append(r, "its peer is in the host netns")
		case observed.NetNSID != recorded.NetNSID:
			r = append(r, fmt.Sprintf("peer link-netnsid %d, recorded %d", observed.NetNSID, recorded.NetNSID))
		}
		if observed.PeerIndex != recorded.PeerIndex {
			r = append(r, fmt.Sprintf("peer ifindex %d, recorded %d", observed.PeerIndex, recorded.PeerIndex))
		}
	}
	return r
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

func (c ContainerIface) String() string {
	return fmt.Sprintf("%s(ifindex %d, %s, %s)", c.Name, c.Index, c.Kind, c.MAC)
}

// ContainerIdentity is the identity of interface l, read inside the pod
// netns. Moved and HostName are the caller's classification.
func ContainerIdentity(l netlink.Link) ContainerIface {
	a := l.Attrs()
	return ContainerIface{Name: a.Name, Index: a.Index, MAC: a.HardwareAddr.String(), Kind: l.Type()}
}

// CompareContainer lists every way the observed container interface differs
// from the recorded one (ifindex, name, MAC, kind).
func CompareContainer(recorded, observed ContainerIface) []string {
	var r []string
	if observed.Index != recorded.Index {
		r = append(r, fmt.Sprintf("ifindex %d, recorded %d", observed.Index, recorded.Index))
	}
	return append(r, compareCommon(recorded.Name, recorded.MAC, recorded.Kind, observed.Name, observed.MAC, observed.Kind)...)
}

func compareCommon(name, mac, kind, oName, oMAC, oKind string) []string {
	var r []string
	if oName != name {
		r = append(r, fmt.Sprintf("name %q, recorded %q", oName, name))
	}
	if !SameMAC(oMAC, mac) {
		r = append(r, fmt.Sprintf("MAC %s, recorded %s", oMAC, mac))
	}
	if oKind != kind {
		r = append(r, fmt.Sprintf("kind %s, recorded %s", oKind, kind))
	}
	return r
}

// SameMAC compares two MAC strings as addresses (case-insensitively).
func SameMAC(a, b string) bool { return strings.EqualFold(a, b) }

// ErrGone means no link exists at the recorded ifindex any more.
var ErrGone = errors.New("link is gone")

// MismatchError means a link exists at the recorded ifindex but is not the
// recorded one; it must be left alone.
type MismatchError struct {
	Link    string // the recorded link, as its String
	Index   int
	Reasons []string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("link at ifindex %d is not the recorded %s: %s", e.Index, e.Link, strings.Join(e.Reasons, "; "))
}
