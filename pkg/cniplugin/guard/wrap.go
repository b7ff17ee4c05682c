package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/leakguard/leakguard/pkg/cniplugin/delegate"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
)

// wrapped is the delegate a DEL runs: its type and its rendered stdin.
type wrapped struct {
	typ   string
	stdin []byte
	from  string // "config" or "record", for the log
}

func (p *Plugin) runner() delegate.Runner { return delegate.Runner{Exec: p.Exec} }

// renderDelegate renders the configured delegate for this call, after
// checking that its plugin is in CNI_PATH (code 7 naming it otherwise, as a
// missing plugin fails every later call).
func (p *Plugin) renderDelegate(inv *invocation, stdin []byte) (*wrapped, error) {
	d := inv.conf.Delegate
	if _, err := p.runner().Find(d.Type); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("delegate: plugin %q not found in CNI_PATH", d.Type), err.Error())
	}
	out, err := delegate.Render(d.Object, stdin, inv.conf.Name, inv.conf.CNIVersion)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "delegate: "+err.Error(), "")
	}
	return &wrapped{typ: d.Type, stdin: out, from: "config"}, nil
}

// delegateForDel picks the delegate DEL runs: the one in DEL's config if its
// plugin is there, else the one recorded at ADD (a config rewritten since ADD
// must not stop DEL), else none (chained behaviour).
func (p *Plugin) delegateForDel(inv *invocation, stdin []byte, rec *record.Record) *wrapped {
	if inv.conf.Delegate != nil {
		w, err := p.renderDelegate(inv, stdin)
		if err == nil {
			return w
		}
		inv.log.Warn("delegate in DEL's config unusable; trying the recorded one", "err", err)
	}
	if rec == nil || len(rec.Delegate) == 0 {
		return nil
	}
	var base struct {
		Type       string `json:"type"`
		Name       string `json:"name"`
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(rec.Delegate, &base); err != nil || base.Type == "" {
		inv.log.Error("recorded delegate unusable: main plugin's DEL not run", "err", err)
		return nil
	}
	out, err := delegate.Render(rec.Delegate, stdin, base.Name, base.CNIVersion)
	if err == nil {
		_, err = p.runner().Find(base.Type)
	}
	if err != nil {
		inv.log.Error("recorded delegate unusable: main plugin's DEL not run", "type", base.Type, "err", err)
		return nil
	}
	return &wrapped{typ: base.Type, stdin: out, from: "record"}
}

// delegateDel runs the delegate's DEL with CNI_NETNS netns ("" for none) and
// logs the outcome.
func (p *Plugin) delegateDel(log *slog.Logger, w *wrapped, netns string) error {
	err := p.runner().Run(context.Background(), "DEL", w.typ, w.stdin, netns)
	log = log.With("delegate", w.typ, "delegateFrom", w.from, "delegateNetns", netns)
	if err != nil {
		log.Error("main plugin's DEL failed: record kept so that a retry runs it again", "err", err)
		return err
	}
	log.Info("main plugin's DEL done")
	return nil
}

// unrecordedNetns returns path, for a delegate's DEL without a record to
// prove it by, only if it holds a netns that cannot be another's: not the
// plugin's own (a /proc/<pid>/ns/net whose pid a host process reused) and
// not one that another attachment's record or tombstone in st names (the pid
// now belongs to another pod). Else "": the main plugin's DEL deletes
// CNI_IFNAME in whatever netns it gets (bridge and ptp do, before skel's own
// check), so a delegate is never handed a leftover file, a path that cannot
// be examined, or a netns that is provably not this attachment's. st may be
// nil (state unusable): only the own-netns rule applies then.
func unrecordedNetns(log *slog.Logger, st *store.Store, key record.Key, path string) string {
	if path == "" {
		return ""
	}
	id, err := nsident.OfPath(path)
	if err != nil {
		return ""
	}
	if own, err := nsident.Current(); err != nil || own == id {
		log.Warn("no record; CNI_NETNS is the plugin's own netns (a reused path): the main plugin's DEL runs without a netns", "path", path, "err", err)
		return ""
	}
	if st == nil {
		return path
	}
	records, tombstones, _ := st.ReadOnly().Entries()
	for _, e := range append(records, tombstones...) {
		r := e.Record
		if r.Netns == id && r.Key.ContainerID != key.ContainerID {
			log.Warn("no record; CNI_NETNS holds another attachment's netns (a reused path): the main plugin's DEL runs without a netns",
				"path", path, "owner", r.Key.String())
			return ""
		}
	}
	return path
}

// usablePin returns the record's pin path if it still holds the recorded
// netns, else "".
func usablePin(log *slog.Logger, rec *record.Record) string {
	if rec.Pin == nil {
		return ""
	}
	n, err := nspin.Open(*rec.Pin)
	if err != nil {
		log.Warn("pin not usable: the main plugin's DEL runs without a netns", "pin", rec.Pin.Path, "err", err)
		return ""
	}
	n.Close()
	return rec.Pin.Path
}

// joinErrors reports the delegate's error and leakguard's own together; a
// CNI error code is kept (the delegate's first).
func joinErrors(delegateErr, ownErr error) error {
	switch {
	case delegateErr == nil:
		return ownErr
	case ownErr == nil:
		return delegateErr
	}
	code := types.ErrInternal
	var e *types.Error
	if errors.As(delegateErr, &e) || errors.As(ownErr, &e) {
		code = e.Code
	}
	return types.NewError(code, fmt.Sprintf("delegate: %v; leakguard: %v", delegateErr, ownErr), "")
}

// forward runs verb (CHECK, GC or STATUS) on the configured delegate, if
// any, with the runtime's CNI_NETNS.
func (p *Plugin) forward(inv *invocation, verb string, args *skel.CmdArgs) error {
	if inv.conf.Delegate == nil {
		return nil
	}
	w, err := p.renderDelegate(inv, args.StdinData)
	if err != nil {
		return err
	}
	return p.runner().Run(context.Background(), verb, w.typ, w.stdin, args.Netns)
}
