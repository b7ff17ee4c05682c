// Package rescue cleans an abandoned pod netns from the inside: entered
// through a pin after the runtime's path is gone, it deletes the pod's
// virtual interfaces, sends devices that were moved into the pod back to the
// host netns under their host names, and reads whether gss-proxy armed the
// netns (auth_rpcgss then holds it forever).
//
// Every interface is acted on only if it is still exactly the recorded one
// (ifindex, name, MAC and kind); anything else is skipped and reported.
package rescue

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

// DefaultGSSFlagPath is the auth_rpcgss flag of the netns of the reading
// thread. /proc/self/net would show the main thread's netns instead, so it is
// read through thread-self from a thread inside the pod netns.
const DefaultGSSFlagPath = "/proc/thread-self/net/rpc/use-gss-proxy"

// GSS proxy states reported in Report.GSSProxy.
const (
	// GSSArmed: the flag reads 1; the kernel will never free this netns.
	GSSArmed = "armed"
	// GSSOff: the flag reads 0 or -1 (never written).
	GSSOff = "off"
	// GSSUnavailable: no flag file; the kernel has no auth_rpcgss loaded.
	GSSUnavailable = "unavailable"
	// GSSUnknown: the flag could not be read or made no sense.
	GSSUnknown = "unknown"
)

// Options tune a rescue.
type Options struct {
	// GSSFlagPath is read from a thread inside the pod netns; empty means
	// DefaultGSSFlagPath. Tests point it at a file of their own.
	GSSFlagPath string
}

// Report says what a rescue did.
type Report struct {
	// Deleted lists the virtual container interfaces deleted (a veth's
	// host end went with it).
	Deleted []podlink.ContainerIface
	// Returned lists the moved devices now back in the host netns.
	Returned []Returned
	// Gone lists the recorded interfaces already gone (the main plugin's
	// own DEL, run through the pin, deleted them: nothing to do).
	Gone []string
	// Skipped explains every recorded interface that is there but was left
	// alone (it is no longer the recorded one).
	Skipped []string
	// GSSProxy is one of GSSArmed, GSSOff, GSSUnavailable, GSSUnknown.
	GSSProxy string
	// GSSProxyArmed is GSSProxy == GSSArmed: the netns will never be freed.
	GSSProxyArmed bool
}

// Returned is a moved device sent back to the host.
type Returned struct {
	Iface podlink.ContainerIface
	// Name and Index are the device's name and ifindex on the host now.
	Name  string
	Index int
	// Renamed is true when Name is Iface.HostName. When false the device
	// keeps the temporary name it was moved with, and Reason says why
	// (its host name is taken on the host, or none was recorded).
	Renamed bool
	Reason  string
}

// Rescue enters podNS and cleans up the recorded container interfaces:
// virtual ones (Moved false) are deleted, moved ones go back to the host
// netns, which is the netns of the thread calling Rescue, captured before
// entering podNS. A moved device is set down, its alias (the host-device
// convention's saved host name) cleared, renamed to a unique temporary name
// and moved; on the host it is renamed to its recorded HostName unless that
// name is taken there, in which case it keeps the temporary name and the
// Returned entry says so. Then the gss-proxy flag is read inside podNS.
//
// Rescue does all it can and returns the report together with every error
// met (errors.Join). Interfaces that are gone or no longer match the record
// are skipped, not errors.
func Rescue(podNS ns.NetNS, ifaces []podlink.ContainerIface, opts Options) (Report, error) {
	rep := Report{GSSProxy: GSSUnknown}
	flagPath := opts.GSSFlagPath
	if flagPath == "" {
		flagPath = DefaultGSSFlagPath
	}
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return rep, fmt.Errorf("open the host netns: %w", err)
	}
	defer hostNS.Close()
	if err := notHost(podNS, hostNS); err != nil {
		return rep, err
	}

	var errs []error
	var pending []moving
	err = podNS.Do(func(ns.NetNS) error {
		for _, c := range ifaces {
			l, err := podlink.VerifyContainer(c)
			if errors.Is(err, podlink.ErrGone) {
				rep.Gone = append(rep.Gone, c.Name)
				continue
			}
			if err != nil {
				rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s: %v; left alone", c.Name, err))
				continue
			}
			if !c.Moved {
				if err := netlink.LinkDel(l); err != nil {
					if podlink.IsNotFound(err) {
						rep.Gone = append(rep.Gone, c.Name)
						continue
					}
					errs = append(errs, fmt.Errorf("delete container interface %s: %w", c.Name, err))
					continue
				}
				rep.Deleted = append(rep.Deleted, c)
				continue
			}
			temp, err := moveOut(l, c, hostNS)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			pending = append(pending, moving{c, temp})
		}
		var err error
		rep.GSSProxy, err = readGSSFlag(flagPath)
		rep.GSSProxyArmed = rep.GSSProxy == GSSArmed
		if err != nil {
			errs = append(errs, err)
		}
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("enter pod netns %s: %w", podNS.Path(), err))
	}
	if len(pending) > 0 {
		err = hostNS.Do(func(ns.NetNS) error {
			for _, m := range pending {
				r, err := nameOnHost(m)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				rep.Returned = append(rep.Returned, r)
			}
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("enter host netns: %w", err))
		}
	}
	return rep, errors.Join(errs...)
}

// moving is a device moved to the host under a temporary name.
type moving struct {
	c    podlink.ContainerIface
	temp string
}

// notHost refuses to "rescue" the caller's own netns: deleting and moving
// interfaces there would act on the host.
func notHost(podNS, hostNS ns.NetNS) error {
	pod, err := nsident.OfFd(podNS.Fd())
	if err != nil {
		return fmt.Errorf("identify pod netns: %w", err)
	}
	host, err := nsident.OfFd(hostNS.Fd())
	if err != nil {
		return fmt.Errorf("identify host netns: %w", err)
	}
	if pod == host {
		return fmt.Errorf("pod netns %s is the caller's own netns %s; refusing to rescue it", podNS.Path(), host)
	}
	return nil
}

// moveOut sends moved device l, found in the pod netns, to hostNS under a
// fresh temporary name and returns that name. On failure the device is put
// back as it was (name, alias, up state) so that a later retry still finds
// the recorded interface.
func moveOut(l netlink.Link, c podlink.ContainerIface, hostNS ns.NetNS) (string, error) {
	a := l.Attrs()
	wasUp := a.Flags&net.FlagUp != 0
	alias := a.Alias
	restore := func() {
		_ = netlink.LinkSetName(l, c.Name)
		if alias != "" {
			_ = netlink.LinkSetAlias(l, alias)
		}
		if wasUp {
			_ = netlink.LinkSetUp(l)
		}
	}
	if wasUp {
		if err := netlink.LinkSetDown(l); err != nil {
			return "", fmt.Errorf("set %s down before moving it to the host: %w", c.Name, err)
		}
	}
	if alias != "" {
		if err := netlink.LinkSetAlias(l, ""); err != nil {
			restore()
			return "", fmt.Errorf("clear alias of %s: %w", c.Name, err)
		}
	}
	// The temporary name is random, so it is unique in both netns; retry
	// the (unlikely) clash a few times.
	var err error
	for range 3 {
		temp := tempName()
		if err = netlink.LinkSetName(l, temp); err != nil {
			if errors.Is(err, unix.EEXIST) {
				continue
			}
			restore()
			return "", fmt.Errorf("rename %s to %s before moving it: %w", c.Name, temp, err)
		}
		if err = netlink.LinkSetNsFd(l, int(hostNS.Fd())); err != nil {
			if errors.Is(err, unix.EEXIST) {
				continue
			}
			break
		}
		return temp, nil
	}
	restore()
	return "", fmt.Errorf("move %s (host name %q) to the host netns: %w", c.Name, c.HostName, err)
}

// nameOnHost finds a device moved out under m.temp in the current (host)
// netns and gives it its recorded host name when that name is free.
func nameOnHost(m moving) (Returned, error) {
	l, err := netlinksafe.LinkByName(m.temp)
	if err != nil {
		return Returned{}, fmt.Errorf("find %s (moved out as %s) on the host: %w", m.c.Name, m.temp, err)
	}
	// Renamed on the way out and renumbered on arrival: only MAC and kind
	// still identify it.
	got := podlink.ContainerIdentity(l)
	if !podlink.SameMAC(got.MAC, m.c.MAC) || got.Kind != m.c.Kind {
		return Returned{}, fmt.Errorf("%s on the host is %s %s, not the moved %s %s; left as is",
			m.temp, got.Kind, got.MAC, m.c.Kind, m.c.MAC)
	}
	r := Returned{Iface: m.c, Name: m.temp, Index: got.Index}
	if m.c.HostName == "" {
		r.Reason = "no host name recorded"
		return r, nil
	}
	if err := netlink.LinkSetName(l, m.c.HostName); err != nil {
		if errors.Is(err, unix.EEXIST) {
			r.Reason = fmt.Sprintf("host name %s is taken on the host", m.c.HostName)
			return r, nil
		}
		return r, fmt.Errorf("rename %s back to %s on the host (it stays %s): %w", m.c.Name, m.c.HostName, m.temp, err)
	}
	r.Name, r.Renamed = m.c.HostName, true
	return r, nil
}

// tempName returns a random 15-byte interface name (IFNAMSIZ-1).
func tempName() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return "lgr" + hex.EncodeToString(b)
}

// GSSFlag reads the gss-proxy flag of podNS from a thread inside it (the
// doomed-netns check of a DEL that finds the netns alive): one of GSSArmed,
// GSSOff, GSSUnavailable, GSSUnknown. flagPath empty means
// DefaultGSSFlagPath.
func GSSFlag(podNS ns.NetNS, flagPath string) (string, error) {
	if flagPath == "" {
		flagPath = DefaultGSSFlagPath
	}
	state := GSSUnknown
	err := podNS.Do(func(ns.NetNS) error {
		var err error
		state, err = readGSSFlag(flagPath)
		return err
	})
	return state, err
}

// readGSSFlag reads the auth_rpcgss use-gss-proxy flag at path, which must be
// the netns of the calling thread (see DefaultGSSFlagPath).
func readGSSFlag(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return GSSUnavailable, nil
	}
	if err != nil {
		return GSSUnknown, fmt.Errorf("read gss-proxy flag: %w", err)
	}
	switch v := strings.TrimSpace(string(b)); v {
	case "1":
		return GSSArmed, nil
	case "0", "-1":
		return GSSOff, nil
	default:
		return GSSUnknown, fmt.Errorf("gss-proxy flag %s reads %q", path, v)
	}
}
