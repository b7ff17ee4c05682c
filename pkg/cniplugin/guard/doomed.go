package guard

import (
	"fmt"
	"log/slog"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/rescue"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

// checkDoomed reads the gss-proxy flag inside the alive netns at path. Armed
// (1) means the kernel will never free this netns once the runtime lets go
// of it: that is logged once, with the pod, and kept in rec (its tombstone
// shows it to the scan). With evacuate (wrapper mode, after the main
// plugin's DEL) the interfaces left in it are deleted and devices without a
// link kind (ENI, VF) go back to the host under their recorded names: a
// physical device would be stranded in a netns that never dies. Chained,
// leakguard's DEL runs before the main plugin's: it records and reports
// only.
func (p *Plugin) checkDoomed(log *slog.Logger, rec *record.Record, path string, evacuate bool) {
	if p.GSSFlagPath == "" && !gssModuleLoaded() {
		log.Debug("auth_rpcgss not loaded: no netns can be doomed")
		return
	}
	n, err := openRecorded(path, rec.Netns)
	if err != nil {
		log.Warn("doomed-netns check skipped", "err", err)
		return
	}
	defer n.Close()
	state, err := rescue.GSSFlag(n, p.GSSFlagPath)
	if err != nil {
		log.Warn("gss-proxy flag unreadable", "err", err)
	}
	if state != rescue.GSSArmed {
		log.Debug("gss-proxy flag", "state", state)
		return
	}
	rec.GSSProxyArmed = true
	log.Warn("doomed netns: gss-proxy armed auth_rpcgss in it; the kernel will never free it", "evacuate", evacuate)
	if !evacuate {
		return
	}
	rep, err := rescue.Rescue(n, rec.Interfaces, rescue.Options{GSSFlagPath: p.GSSFlagPath})
	for _, c := range rep.Deleted {
		log.Info("evacuated doomed netns: deleted interface", "iface", c.Name)
	}
	for _, r := range rep.Returned {
		log.Info("evacuated doomed netns: returned device to the host", "iface", r.Iface.Name, "hostName", r.Name, "renamed", r.Renamed, "reason", r.Reason)
	}
	for _, why := range rep.Skipped {
		log.Debug("evacuation: interface left alone", "reason", why)
	}
	if err != nil {
		log.Error("evacuation of doomed netns incomplete", "err", err)
	}
}

// gssModuleLoaded reports whether auth_rpcgss is loaded: its per-netns init
// creates the use-gss-proxy flag in every netns, the caller's included, so
// without it in ours no netns can hold an armed flag. One stat saves every
// DEL on a node without the module (most nodes) from entering the pod netns.
func gssModuleLoaded() bool {
	var st unix.Stat_t
	return unix.Stat(rescue.DefaultGSSFlagPath, &st) == nil
}

// openRecorded opens the netns at path and proves, on the open fd, that it
// is the recorded one (the path may have changed since it was classified).
func openRecorded(path string, want nsident.Identity) (ns.NetNS, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	got, err := nsident.OfFd(n.Fd())
	if err != nil || got != want {
		n.Close()
		return nil, fmt.Errorf("netns at %s is %v, not the recorded %s (%v)", path, got, want, err)
	}
	return n, nil
}
