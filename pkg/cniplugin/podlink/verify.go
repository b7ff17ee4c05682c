package podlink

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Verify looks the recorded host link up by ifindex in the current (host)
// netns and returns it if it is still exactly the recorded one. It returns
// ErrGone when nothing is at that ifindex, and a *MismatchError when something
// else is. It never lists all links: the cost does not grow with the host's
// size.
func Verify(id Identity) (netlink.Link, error) { return VerifyWith(nil, id) }

// VerifyWith is Verify through a netlink handle that a caller checking many
// links reuses (one socket instead of one per look-up); nil means a socket
// per call.
func VerifyWith(h *netlink.Handle, id Identity) (netlink.Link, error) {
	l, err := byIndex(h, id.Index, id.String())
	if err != nil {
		return nil, err
	}
	if r := Compare(id, HostIdentity(l)); len(r) > 0 {
		return nil, &MismatchError{Link: id.String(), Index: id.Index, Reasons: r}
	}
	return l, nil
}

// VerifyContainer is Verify for a container interface, in the current netns
// (the caller is inside the pod netns).
func VerifyContainer(c ContainerIface) (netlink.Link, error) {
	l, err := byIndex(nil, c.Index, c.String())
	if err != nil {
		return nil, err
	}
	if r := CompareContainer(c, ContainerIdentity(l)); len(r) > 0 {
		return nil, &MismatchError{Link: c.String(), Index: c.Index, Reasons: r}
	}
	return l, nil
}

func byIndex(h *netlink.Handle, index int, what string) (netlink.Link, error) {
	if index <= 0 {
		return nil, &MismatchError{Link: what, Index: index, Reasons: []string{"no ifindex recorded"}}
	}
	var l netlink.Link
	var err error
	if h != nil {
		l, err = h.LinkByIndex(index)
	} else {
		l, err = netlink.LinkByIndex(index)
	}
	if IsNotFound(err) {
		return nil, ErrGone
	}
	if err != nil {
		return nil, fmt.Errorf("look up ifindex %d: %w", index, err)
	}
	return l, nil
}

// IsNotFound reports whether a netlink error says the link does not exist.
func IsNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// Remains reports whether any recorded host link is still there as
// recorded. A link whose ifindex is free, or now names another link, no
// longer remains: the recorded object is gone, and nothing that holds its
// identity can ever reap it. Only a failed look-up is an error (then the
// answer is unknown and callers keep what they hold).
func Remains(h *netlink.Handle, links []Identity) (bool, error) {
	for _, id := range links {
		_, err := VerifyWith(h, id)
		var mm *MismatchError
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, ErrGone), errors.As(err, &mm):
		default:
			return false, fmt.Errorf("check host link %s: %w", id, err)
		}
	}
	return false, nil
}

// Reap deletes the recorded link after Verify proved it is the recorded one.
// Deleting a veth also deletes its peer, even inside an unreachable netns.
// A link that is already gone is not an error; a mismatch is returned as
// *MismatchError and nothing is deleted.
func Reap(id Identity) (bool, error) { return ReapWith(nil, id) }

// ReapWith is Reap through a reusable netlink handle (nil: a socket per
// call). It reports whether it deleted the link.
func ReapWith(h *netlink.Handle, id Identity) (bool, error) {
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
		if IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("delete %s: %w", id, err)
	}
	return true, nil
}
