package nsreach

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

// NSIDs returns, for every netns of set that the current netns (the host)
// has an nsid for, that nsid. It must run on a thread in the host netns.
//
// The kernel assigns an nsid on demand only, e.g. when a link in the host
// points into the netns (IFLA_LINK_NETNSID); this lookup never assigns one.
// So a reachable netns without an nsid has no host link pointing into it and
// is simply absent from the result. A netns whose reference vanished between
// the walk and this call is skipped as well.
//
// Each netns is opened through its first reference that still leads to it
// (the walk keeps a few per netns: a process seen first may have exited
// since). unresolved counts the netns none of whose references still leads
// to it: they may have become unreachable, or be reached only in ways the
// walk did not see; callers must not take their absence from the map as
// proof of unreachability.
func NSIDs(set Set) (map[int]nsident.Identity, int, error) {
	nsids, unresolved, err := Resolve(set)
	return nsids, len(unresolved), err
}

// Resolve is NSIDs naming the netns it could not resolve, so that a caller
// can look for them again in a fresh walk.
func Resolve(set Set) (map[int]nsident.Identity, []nsident.Identity, error) {
	var unresolved []nsident.Identity
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, fmt.Errorf("open netlink: %w", err)
	}
	defer h.Close()
	out := make(map[int]nsident.Identity, len(set))
	for want, ref := range set {
		resolved := false
		for _, r := range append([]Ref{ref}, ref.Alternates...) {
			id, nsid, err := nsidOf(h, r.Path)
			if err != nil {
				return nil, nil, err
			}
			// The path may now lead elsewhere (a reused pid, a remounted
			// path): what counts is the namespace actually opened.
			if id != want {
				continue
			}
			resolved = true
			if nsid >= 0 {
				out[nsid] = id
			}
			break
		}
		if !resolved {
			unresolved = append(unresolved, want)
		}
	}
	return out, unresolved, nil
}

func nsidOf(h *netlink.Handle, path string) (nsident.Identity, int, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if vanished(err) {
		return nsident.Identity{}, -1, nil
	}
	if err != nil {
		return nsident.Identity{}, -1, fmt.Errorf("open netns %s: %w", path, err)
	}
	defer f.Close()
	id, err := nsident.OfFd(f.Fd())
	if errors.Is(err, nsident.ErrNotNetns) {
		return nsident.Identity{}, -1, nil
	}
	if err != nil {
		return nsident.Identity{}, -1, fmt.Errorf("identify netns %s: %w", path, err)
	}
	// A reused fd number may now hold another kind of namespace.
	if t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWNET {
		return nsident.Identity{}, -1, nil
	}
	nsid, err := h.GetNetNsIdByFd(int(f.Fd()))
	if err != nil {
		return nsident.Identity{}, -1, fmt.Errorf("get nsid of netns %s: %w", path, err)
	}
	return id, nsid, nil
}
