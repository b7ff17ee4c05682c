// Command tke-eni is a test-only main CNI plugin that behaves like
// tke-eni-cni: a veth pair per pod whose host end has a deterministic name,
// a /32 host route and ip rules for the pod address (to-pod into main, from-pod
// into a per-ENI table). Like the real plugin, its DEL does nothing at all when
// the netns path is gone, which is exactly what leaves veths behind on nodes
// hit by the auth_rpcgss netns leak.
package main

import (
	"errors"
	"fmt"
	"net"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

func init() {
	// Namespace switches apply to one OS thread: keep main on its thread.
	runtime.LockOSThread()
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	conf, err := loadConf(args.StdinData, args.Args, args.ContainerID)
	if err != nil {
		return err
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return fmt.Errorf("failed to open netns %q: %w", args.Netns, err)
	}
	defer netns.Close()
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return fmt.Errorf("failed to open the host netns: %w", err)
	}
	defer hostNS.Close()

	// A previous sandbox of the same pod may have left its veth behind.
	if err := deleteLinkByName(conf.hostVeth); err != nil {
		return fmt.Errorf("failed to delete stale host veth: %w", err)
	}

	hostIf, contIf, err := setupPodSide(netns, hostNS, args.IfName, conf)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = deleteLinkByName(conf.hostVeth)
			_ = deleteRules(conf)
		}
	}()
	if err = setupHostSide(conf); err != nil {
		return err
	}

	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: hostIf.Name, Mac: hostIf.HardwareAddr.String()},
			{Name: contIf.Name, Mac: contIf.HardwareAddr.String(), Sandbox: args.Netns},
		},
		IPs: []*current.IPConfig{{
			Interface: current.Int(1),
			Address:   *conf.addr,
			Gateway:   conf.gateway,
		}},
		Routes: []*types.Route{{
			Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
			GW:  conf.gateway,
		}},
	}
	return types.PrintResult(result, conf.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData, args.Args, args.ContainerID)
	if err != nil {
		return err
	}
	// The production behaviour leakguard exists for: without a netns path
	// there is "nothing to clean", so the host veth, its peer and the pod's
	// rules all stay behind.
	if args.Netns == "" {
		return nil
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		if errors.As(err, &notExist) || errors.As(err, &notNS) {
			return nil
		}
		return fmt.Errorf("failed to open netns %q: %w", args.Netns, err)
	}
	defer netns.Close()

	// Deleting the pod end deletes the host veth with it, and with the host
	// veth go the /32 route and the table's route through it.
	err = netns.Do(func(ns.NetNS) error {
		if err := deleteLinkByName(args.IfName); err != nil {
			return fmt.Errorf("failed to delete pod interface: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return deleteRules(conf)
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData, args.Args, args.ContainerID)
	if err != nil {
		return err
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return fmt.Errorf("failed to open netns %q: %w", args.Netns, err)
	}
	defer netns.Close()
	if err := checkPrevResult(conf, args); err != nil {
		return err
	}
	err = netns.Do(func(ns.NetNS) error {
		return checkPodSide(args.IfName, conf)
	})
	if err != nil {
		return err
	}
	return checkHostSide(conf)
}

func checkPrevResult(conf *podConf, args *skel.CmdArgs) error {
	if conf.RawPrevResult == nil {
		return fmt.Errorf("tke-eni: CHECK requires a prevResult")
	}
	if err := version.ParsePrevResult(&conf.NetConf.NetConf); err != nil {
		return fmt.Errorf("failed to parse prevResult: %w", err)
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return fmt.Errorf("failed to convert prevResult: %w", err)
	}
	var host, cont bool
	for _, intf := range prev.Interfaces {
		host = host || intf.Sandbox == "" && intf.Name == conf.hostVeth
		cont = cont || intf.Sandbox == args.Netns && intf.Name == args.IfName
	}
	if !host || !cont {
		return fmt.Errorf("prevResult lacks host veth %q or pod interface %q in %q", conf.hostVeth, args.IfName, args.Netns)
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	_, err := loadConf(args.StdinData, args.Args, args.ContainerID)
	return err
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Check:  cmdCheck,
		Del:    cmdDel,
		Status: cmdStatus,
	}, version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), "tke-eni (leakguard test plugin)")
}

// deleteLinkByName deletes the link if it exists in the current netns.
func deleteLinkByName(name string) error {
	link, err := netlinksafe.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("failed to look up %q: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("failed to delete %q: %w", name, err)
	}
	return nil
}
