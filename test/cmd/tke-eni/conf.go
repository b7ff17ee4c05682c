package main

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
)

const (
	defaultGateway         = "169.254.1.1"
	defaultToPodPriority   = 512
	defaultFromPodPriority = 1536
	hostVethPrefix         = "eni"
)

// NetConf is the plugin entry of the conflist. The pod address can be
// overridden per pod with IP=<cidr> in CNI_ARGS, like the static IPAM plugin.
type NetConf struct {
	types.NetConf
	// IP is the pod address, e.g. "10.77.0.5/32".
	IP string `json:"ip"`
	// Gateway is the link-local next hop the pod routes through (onlink).
	Gateway string `json:"gateway,omitempty"`
	// Table is the per-ENI route table that traffic from the pod is looked up in.
	Table int `json:"table"`
	// ToPodPriority is the priority of `to <podIP> lookup main`.
	ToPodPriority int `json:"toPodPriority,omitempty"`
	// FromPodPriority is the priority of `from <podIP> lookup <table>`.
	FromPodPriority int `json:"fromPodPriority,omitempty"`
	// ENILink names the host link standing in for the ENI. When set, the
	// table's default route goes out of it and is shared by every pod of the
	// ENI (never removed by DEL); when empty the default route goes back
	// through the pod's own host veth.
	ENILink string `json:"eniLink,omitempty"`
	MTU     int    `json:"mtu,omitempty"`
}

// podArgs are the CNI_ARGS keys the plugin reads (kubelet-style).
type podArgs struct {
	types.CommonArgs
	IP                types.UnmarshallableString
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive,staticcheck // CNI_ARGS key: types.LoadArgs matches field names, not tags
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive,staticcheck // CNI_ARGS key: types.LoadArgs matches field names, not tags
}

// podConf is the configuration resolved for one invocation.
type podConf struct {
	*NetConf
	addr     *net.IPNet // pod address with its configured prefix
	gateway  net.IP
	hostVeth string
}

func loadConf(stdin []byte, cniArgs, containerID string) (*podConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, fmt.Errorf("failed to parse network configuration: %w", err)
	}
	args := podArgs{}
	args.IgnoreUnknown = true
	if err := types.LoadArgs(cniArgs, &args); err != nil {
		return nil, fmt.Errorf("failed to parse CNI_ARGS: %w", err)
	}

	if conf.Gateway == "" {
		conf.Gateway = defaultGateway
	}
	if conf.ToPodPriority == 0 {
		conf.ToPodPriority = defaultToPodPriority
	}
	if conf.FromPodPriority == 0 {
		conf.FromPodPriority = defaultFromPodPriority
	}
	if conf.Table <= 0 || conf.Table >= 253 && conf.Table <= 255 {
		return nil, fmt.Errorf("invalid \"table\" %d: must be a positive table number other than 253-255", conf.Table)
	}
	if conf.ToPodPriority < 0 || conf.FromPodPriority < 0 {
		return nil, fmt.Errorf("rule priorities must not be negative")
	}

	ipStr := conf.IP
	if args.IP != "" {
		ipStr = string(args.IP)
	}
	if ipStr == "" {
		return nil, fmt.Errorf("no pod address: set \"ip\" in the config or IP in CNI_ARGS")
	}
	ip, ipNet, err := net.ParseCIDR(ipStr)
	if err != nil {
		return nil, fmt.Errorf("invalid pod address %q: %w", ipStr, err)
	}
	if ip.To4() == nil {
		return nil, fmt.Errorf("invalid pod address %q: only IPv4 is supported", ipStr)
	}
	gw := net.ParseIP(conf.Gateway)
	if gw == nil || gw.To4() == nil {
		return nil, fmt.Errorf("invalid \"gateway\" %q: not an IPv4 address", conf.Gateway)
	}

	pod := string(args.K8S_POD_NAMESPACE) + "/" + string(args.K8S_POD_NAME)
	if args.K8S_POD_NAMESPACE == "" || args.K8S_POD_NAME == "" {
		pod = containerID
	}
	return &podConf{
		NetConf:  conf,
		addr:     &net.IPNet{IP: ip.To4(), Mask: ipNet.Mask},
		gateway:  gw.To4(),
		hostVeth: hostVethName(pod),
	}, nil
}

// hostVethName is deterministic per pod, like tke-eni-cni: the next sandbox
// of the same pod gets the same host veth name.
func hostVethName(pod string) string {
	sum := sha1.Sum([]byte(pod))
	return hostVethPrefix + hex.EncodeToString(sum[:])[:11]
}

// podHostNet is the pod address as a host route / rule selector.
func (c *podConf) podHostNet() *net.IPNet {
	return &net.IPNet{IP: c.addr.IP, Mask: net.CIDRMask(32, 32)}
}
