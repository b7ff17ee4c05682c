package cri

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	rt "github.com/leakguard/leakguard/test/runtime"
	"github.com/leakguard/leakguard/test/runtime/cnicall"
)

// hostVeth returns the one host veth on the network's bridge (the pod's).
func hostVeth(t *testing.T, net *rt.Network) netlink.Link {
	t.Helper()
	veths, err := net.HostVeths()
	if err != nil {
		t.Fatal(err)
	}
	if len(veths) != 1 {
		t.Fatalf("want one host veth on %s, got %d", net.Bridge, len(veths))
	}
	return veths[0]
}

// linkExists reports whether the host still has the link (same ifindex and
// name: an ifindex alone could be reused).
func linkExists(t *testing.T, want netlink.Link) bool {
	t.Helper()
	l, err := netlink.LinkByIndex(want.Attrs().Index)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return false
	}
	if err != nil {
		t.Fatalf("look up ifindex %d: %v", want.Attrs().Index, err)
	}
	return l.Attrs().Name == want.Attrs().Name
}

// chainDELs returns the DELs of the chain's plugins for a pod (loopback and
// IPAM excluded), in the order they ran.
func chainDELs(t *testing.T, cni *rt.CNI, podID string) []cnicall.Call {
	t.Helper()
	calls, err := cni.Calls()
	if err != nil {
		t.Fatal(err)
	}
	return cnicall.Filter(calls, func(c cnicall.Call) bool {
		return c.Command == "DEL" && c.ContainerID == podID && (c.Plugin == "bridge" || c.Plugin == "leakguard")
	})
}

func describeCalls(calls []cnicall.Call) string {
	var b strings.Builder
	for _, c := range calls {
		fmt.Fprintf(&b, "\n  %s", c)
	}
	return b.String()
}

// delMessages returns the messages leakguard logged for a pod's DELs.
func delMessages(t *testing.T, cni *rt.CNI, podID string) []string {
	t.Helper()
	var out []string
	for _, rec := range cni.LeakguardLogLines(t, podID) {
		if rec["cmd"] == "DEL" {
			msg, _ := rec["msg"].(string)
			out = append(out, msg)
		}
	}
	return out
}

func containsMsg(msgs []string, prefix string) bool {
	return slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, prefix) })
}
