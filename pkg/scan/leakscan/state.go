package leakscan

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

// StateEntry is one record or tombstone of the state dir, as listed by
// `leakguardctl records`. Its JSON names are stable.
type StateEntry struct {
	// Kind is "record" or "tombstone".
	Kind          string             `json:"kind"`
	Network       string             `json:"network"`
	ContainerID   string             `json:"containerID"`
	IfName        string             `json:"ifName"`
	File          string             `json:"file"`
	Created       time.Time          `json:"created"`
	TombstonedAt  *time.Time         `json:"tombstonedAt,omitempty"`
	Netns         nsident.Identity   `json:"netns"`
	NetnsPath     string             `json:"netnsPath"`
	HostLinks     []podlink.Identity `json:"hostLinks"`
	IPs           []string           `json:"ips"`
	GSSProxyArmed bool               `json:"gssProxyArmed"`
	Pin           *PinState          `json:"pin,omitempty"`
}

// PinState is a record's netns pin and whether it still holds the recorded
// netns.
type PinState struct {
	Path string `json:"path"`
	// State is nsident's verdict on the pin path against the recorded
	// netns: "alive" (the pin holds it), "gone" or "unknown".
	State  string `json:"state"`
	Reason string `json:"reason"`
}

// StateReport lists the state dir.
type StateReport struct {
	Dir     string       `json:"stateDir"`
	Entries []StateEntry `json:"entries"`
	// PinDir is the pin directory that was searched for stray pins.
	PinDir string `json:"pinDir,omitempty"`
	// StrayPins are entries of PinDir that no record names: pins that
	// outlived their attachment and keep a netns alive.
	StrayPins []StrayPin `json:"strayPins"`
	// Discarded are the record and tombstone files that were not used.
	Discarded []Discarded `json:"discarded"`
	Warnings  []string    `json:"warnings,omitempty"`
}

// Discarded is a record or tombstone file that no reader uses, and why. Its
// JSON names are stable.
type Discarded struct {
	// Kind is "other-boot", "corrupt", "too-large" or "not-regular-file"
	// (store.DiscardKind).
	Kind   string `json:"kind"`
	Path   string `json:"path"`
	Reason string `json:"reason"`
	// Action is what became of the file: "left" (a read-only command such
	// as scan or records), "moved-aside" (to MovedTo) or "removed" (a
	// record of another boot).
	Action  string `json:"action"`
	MovedTo string `json:"movedTo,omitempty"`
}

// Actions of a Discarded file.
const (
	DiscardLeft    = "left"
	DiscardMoved   = "moved-aside"
	DiscardRemoved = "removed"
)

// storeProblems splits what the store met while listing into discarded
// files, every one of them reported, and other warnings.
func storeProblems(problems []error) ([]Discarded, []string) {
	var discarded []Discarded
	var warnings []string
	for _, p := range problems {
		var d *store.DiscardedError
		if !errors.As(p, &d) {
			warnings = append(warnings, p.Error())
			continue
		}
		out := Discarded{Kind: d.Kind.String(), Path: d.Path, Reason: d.Reason, Action: DiscardRemoved, MovedTo: d.MovedTo}
		switch {
		case d.Kept:
			out.Action = DiscardLeft
		case d.MovedTo != "":
			out.Action = DiscardMoved
		}
		discarded = append(discarded, out)
	}
	return discarded, warnings
}

// StrayPin is a file in the pin dir that no record names.
type StrayPin struct {
	Path string `json:"path"`
	// Netns is the namespace mounted there, absent when nothing is.
	Netns *nsident.Identity `json:"netns,omitempty"`
}

// ListState reads every record and tombstone of st (nil: an empty report)
// and, when pinDir is set, lists the pins there that no record names.
func ListState(st *store.Store, pinDir string) *StateReport {
	rep := &StateReport{Entries: []StateEntry{}, StrayPins: []StrayPin{}, Discarded: []Discarded{}, PinDir: pinDir}
	defer func() { rep.StrayPins, rep.Warnings = strayPins(pinDir, rep.Entries, rep.StrayPins, rep.Warnings) }()
	if st == nil {
		return rep
	}
	rep.Dir = st.Dir()
	recs, tombs, problems := st.Entries()
	discarded, warnings := storeProblems(problems)
	rep.Discarded = append(rep.Discarded, discarded...)
	rep.Warnings = append(rep.Warnings, warnings...)
	add := func(kind string, es []store.Entry) {
		for _, e := range es {
			r := e.Record
			se := StateEntry{
				Kind: kind, Network: r.Network, ContainerID: r.ContainerID, IfName: r.IfName, File: e.Path,
				Created: r.Created, TombstonedAt: r.TombstonedAt, Netns: r.Netns, NetnsPath: r.NetnsPath,
				HostLinks: r.HostLinks, IPs: r.IPs, GSSProxyArmed: r.GSSProxyArmed,
			}
			if se.HostLinks == nil {
				se.HostLinks = []podlink.Identity{}
			}
			if se.IPs == nil {
				se.IPs = []string{}
			}
			if r.Pin != nil {
				v := nsident.Classify(r.Pin.Path, r.Pin.Netns)
				se.Pin = &PinState{Path: r.Pin.Path, State: v.State.String(), Reason: v.Reason}
			}
			rep.Entries = append(rep.Entries, se)
		}
	}
	add("record", recs)
	add("tombstone", tombs)
	sort.SliceStable(rep.Entries, func(i, j int) bool {
		a, b := rep.Entries[i], rep.Entries[j]
		if a.Network != b.Network {
			return a.Network < b.Network
		}
		if a.ContainerID != b.ContainerID {
			return a.ContainerID < b.ContainerID
		}
		return a.IfName < b.IfName
	})
	return rep
}

// strayPins lists the entries of pinDir that no record's pin names.
func strayPins(pinDir string, entries []StateEntry, out []StrayPin, warn []string) ([]StrayPin, []string) {
	if pinDir == "" {
		return out, warn
	}
	ents, err := os.ReadDir(pinDir)
	if errors.Is(err, os.ErrNotExist) {
		return out, warn
	}
	if err != nil {
		return out, append(warn, fmt.Sprintf("read pin dir: %v", err))
	}
	named := map[string]bool{}
	for _, e := range entries {
		if e.Pin != nil {
			named[filepath.Clean(e.Pin.Path)] = true
		}
	}
	for _, e := range ents {
		p := filepath.Join(pinDir, e.Name())
		if named[p] || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		sp := StrayPin{Path: p}
		if id, err := nsident.OfPath(p); err == nil {
			sp.Netns = &id
		}
		out = append(out, sp)
	}
	return out, warn
}
