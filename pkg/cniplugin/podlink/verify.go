package podlink

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// Verify looks the recorded link up by ifindex in the current (host) netns
// and returns it if it is still exactly the recorded one. It returns ErrGone
// when nothing is at that ifindex, and a *MismatchError when something else
// is. It never lists all links: the cost does not grow with the host's size.
func Verify(id Identity) (netlink.Link, error) { return VerifyWith(nil, id) }

// VerifyWith is Verify through a netlink handle that a caller checking many
// links reuses (one socket instead of one per look-up); nil means a socket
// per call.
func VerifyWith(h *netlink.Handle, id Identity) (netlink.Link, error) {
	if id.Index <= 0 {
		return nil, &MismatchError{ID: id, Reasons: []string{"no ifindex recorded"}}
	}
	var l netlink.Link
	var err error
	if h != nil {
		l, err = h.LinkByIndex(id.Index)
	} else {
		l, err = netlink.LinkByIndex(id.Index)
	}
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, ErrGone
		}
		return nil, fmt.Errorf("look up ifindex %d: %w", id.Index, err)
	}
	if r := mismatches(id, l); len(r) > 0 {
		return nil, &MismatchError{ID: id, Reasons: r}
	}
	return l, nil
}

// Reap deletes the recorded link after Verify proved it is the recorded one.
// Deleting a veth also deletes its peer, even inside an unreachable netns.
// A link that is already gone is not an error; a mismatch is returned as
// *MismatchError and nothing is deleted.
func Reap(id Identity) (deleted bool, err error) { return ReapWith(nil, id) }

// ReapWith is Reap through a reusable netlink handle (nil: a socket per call).
func ReapWith(h *netlink.Handle, id Identity) (deleted bool, err error) {
	l, err := VerifyWith(h, id)
	if errors.Is(err, ErrGone) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	del := netlink.LinkDel
	if h != nil {
		del = h.LinkDel
	}
	if err := del(l); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return false, nil
		}
		return false, fmt.Errorf("delete %s: %w", id, err)
	}
	return true, nil
}
