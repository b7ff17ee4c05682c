package guard_test

import (
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

func TestCheckFailsWhenRecordNoLongerHolds(t *testing.T) {
	t.Run("host link gone", func(t *testing.T) {
		f := newFixture(t)
		f.add("1.0.0")
		inNS(t, f.node, func() error {
			l, err := netlinksafe.LinkByName(f.hostVeth.Name)
			if err != nil {
				return err
			}
			return netlink.LinkDel(l)
		})
		mustFailWith(t, f.check("1.0.0"), "is gone")
	})
	t.Run("host link MAC changed", func(t *testing.T) {
		f := newFixture(t)
		f.add("1.1.0")
		inNS(t, f.node, func() error {
			l, err := netlinksafe.LinkByName(f.hostVeth.Name)
			if err != nil {
				return err
			}
			return netlink.LinkSetHardwareAddr(l, []byte{2, 0, 0, 0, 0, 1})
		})
		mustFailWith(t, f.check("1.1.0"), "MAC")
	})
	t.Run("prevResult differs", func(t *testing.T) {
		f := newFixture(t)
		f.add("0.4.0")
		prev := f.prevResult()
		prev.IPs[0].Address.IP = prev.IPs[0].Address.IP.To4()
		prev.IPs[0].Address.IP[3] = 8
		a := f.args(f.podPath, f.conf("0.4.0", prev, nil))
		err := f.node.Do(func(ns.NetNS) error {
			return testutils.CmdCheckWithArgs(a, func() error { return f.plugin.Check(a) })
		})
		mustFailWith(t, err, "IPs")
	})
	t.Run("no record", func(t *testing.T) {
		f := newFixture(t)
		mustFailWith(t, f.check("1.0.0"), "no leakguard record")
	})
}

func mustFailWith(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("CHECK should fail mentioning %q, got %v", want, err)
	}
}
