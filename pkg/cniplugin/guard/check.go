package guard

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

// Check verifies that the record still describes the attachment: the netns
// is the recorded one, every recorded host link is still the same object,
// and the record agrees with prevResult.
// Wrapping a delegate, the delegate's CHECK runs first and errors of both
// are reported.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	return p.run("CHECK", args, func(inv *invocation, args *skel.CmdArgs) error {
		return joinErrors(p.forward(inv, "CHECK", args), p.check(inv, args))
	})
}

func (p *Plugin) check(inv *invocation, args *skel.CmdArgs) error {
	if inv.conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs a prevResult", "")
	}
	prev, err := current.NewResultFromResult(inv.conf.PrevResult)
	if err != nil {
		return fmt.Errorf("convert prevResult: %w", err)
	}
	st, lock, err := p.lock(inv)
	if err != nil {
		return err
	}
	// Without a record (none, or discarded) the lock file is not kept.
	defer func() { lock.Release(!st.HasRecordNamed(inv.key.Name())) }()
	rec, err := st.Load(inv.key)
	if err != nil {
		return fmt.Errorf("load record: %w", err)
	}
	if rec == nil {
		return fmt.Errorf("no leakguard record for %s: was leakguard in the chain at ADD?", inv.key)
	}
	return checkRecord(rec, args.Netns, prev)
}

func checkRecord(rec *record.Record, netns string, prev *current.Result) error {
	if v := nsident.Classify(netns, rec.Netns); v.State != nsident.Alive {
		return fmt.Errorf("netns does not match the record: %s", v.Reason)
	}
	for _, id := range rec.HostLinks {
		if _, err := podlink.Verify(id); errors.Is(err, podlink.ErrGone) {
			return fmt.Errorf("recorded host link %s is gone", id)
		} else if err != nil {
			return fmt.Errorf("recorded host link check: %w", err)
		}
	}
	var ips []string
	for _, ip := range prev.IPs {
		ips = append(ips, ip.Address.String())
	}
	if !sameSet(ips, rec.IPs) {
		return fmt.Errorf("prevResult IPs [%s] differ from recorded [%s]", strings.Join(ips, " "), strings.Join(rec.IPs, " "))
	}
	for _, i := range prev.Interfaces {
		if i == nil || i.Sandbox != "" || i.Mac == "" {
			continue
		}
		for _, id := range rec.HostLinks {
			if id.Name == i.Name && !podlink.SameMAC(id.MAC, i.Mac) {
				return fmt.Errorf("prevResult host interface %s has MAC %s, recorded %s", i.Name, i.Mac, id.MAC)
			}
		}
	}
	return nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
