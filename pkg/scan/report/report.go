// Package report renders leakscan results for operators: readable tables,
// JSON with stable field names, and node_exporter textfile metrics.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/leakguard/leakguard/pkg/scan/leakscan"
)

// JSON writes v indented, with a trailing newline.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

func owner(l leakscan.Leak) string {
	if l.Owner == nil {
		return "-"
	}
	return l.Owner.String() + " (" + l.Owner.Kind + ")"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// ScanTable writes the scan as a table of leaked host links and a summary.
func ScanTable(w io.Writer, r *leakscan.Report) error {
	if len(r.Leaks) == 0 {
		fmt.Fprintf(w, "no leaked network namespaces (%d reachable)\n", r.ReachableNetns)
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST LINK\tIFINDEX\tKIND\tMAC\tNSID\tOWNER (network/containerID/ifname)\tGSS-PROXY ARMED")
		for _, l := range r.Leaks {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\n", l.HostLink, l.Ifindex, l.Kind, l.MAC, l.NSID, owner(l), yesNo(l.GSSProxyArmed))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(w, "\n%d leaked network namespace(s) behind %d host link(s); %d namespaces reachable\n",
			r.LeakedNetns, len(r.Leaks), r.ReachableNetns)
	}
	if r.Slab.Available {
		fmt.Fprintf(w, "slab estimate: %d to %d leaked network namespaces (net_namespace active objects %d - reachable %d, %d of them on per-CPU slabs; %s)\n",
			r.Slab.LeakedLowerBound, r.Slab.Leaked, r.Slab.ActiveObjects, r.Slab.ReachableObjects, r.Slab.CPUSlabObjects, r.Slab.Reason)
	} else {
		fmt.Fprintf(w, "slab estimate: unavailable (%s)\n", r.Slab.Reason)
	}
	if n := len(r.UnreadableProcesses); n > 0 {
		fmt.Fprintf(w, "warning: %d process(es) could not be inspected (%s): a netns held only by them is reported as leaked\n",
			n, pids(r.UnreadableProcesses))
	}
	discarded(w, r.Discarded)
	for _, s := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", s)
	}
	return nil
}

// discarded writes one line per unusable state file, greppable by kind.
func discarded(w io.Writer, ds []leakscan.Discarded) {
	for _, d := range ds {
		what := "left in place"
		switch d.Action {
		case leakscan.DiscardMoved:
			what = "moved to " + d.MovedTo
		case leakscan.DiscardRemoved:
			what = "removed"
		}
		fmt.Fprintf(w, "discarded (%s): %s: %s; %s\n", d.Kind, d.Path, d.Reason, what)
	}
}

func pids(p []int) string {
	s := make([]string, 0, len(p))
	for i, v := range p {
		if i == 5 {
			s = append(s, "...")
			break
		}
		s = append(s, strconv.Itoa(v))
	}
	return "pid " + strings.Join(s, ", ")
}

// ReapTable writes what reap did, one line per leaked host link, and the
// state files the scan discarded.
func ReapTable(w io.Writer, rs []leakscan.ReapResult, ds []leakscan.Discarded) error {
	defer discarded(w, ds)
	if len(rs) == 0 {
		fmt.Fprintln(w, "nothing to reap: no leaked host links")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tHOST LINK\tIFINDEX\tNSID\tOWNER\tDETAIL")
	for _, r := range rs {
		detail := r.Reason
		if r.StateFileRemoved != "" {
			detail = strings.TrimSpace(detail + " removed " + r.StateFileRemoved)
		}
		if detail == "" {
			detail = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", r.Action, r.HostLink, r.Ifindex, r.NSID, owner(r.Leak), detail)
	}
	return tw.Flush()
}

// StateTable writes the state dir's records and tombstones.
func StateTable(w io.Writer, s *leakscan.StateReport) error {
	if len(s.Entries) == 0 {
		fmt.Fprintf(w, "no records in %q\n", s.Dir)
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tNETWORK\tCONTAINER ID\tIFNAME\tCREATED\tNETNS\tHOST LINKS\tIPS\tPIN\tGSS-PROXY ARMED")
		for _, e := range s.Entries {
			links := make([]string, 0, len(e.HostLinks))
			for _, h := range e.HostLinks {
				links = append(links, fmt.Sprintf("%s#%d", h.Name, h.Index))
			}
			pin := "-"
			if e.Pin != nil {
				pin = e.Pin.Path + " (" + e.Pin.State + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Kind, e.Network, e.ContainerID, e.IfName,
				e.Created.UTC().Format(time.RFC3339), e.Netns, dash(strings.Join(links, ",")), dash(strings.Join(e.IPs, ",")),
				pin, yesNo(e.GSSProxyArmed))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, p := range s.StrayPins {
		what := "nothing mounted"
		if p.Netns != nil {
			what = "holds netns " + p.Netns.String()
		}
		fmt.Fprintf(w, "stray pin (no record names it): %s (%s)\n", p.Path, what)
	}
	discarded(w, s.Discarded)
	for _, p := range s.Warnings {
		fmt.Fprintf(w, "warning: %s\n", p)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
