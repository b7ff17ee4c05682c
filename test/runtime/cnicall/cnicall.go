// Package cnicall is the record of one CNI call as test/cmd/cnispy writes it
// (one JSON line per call in <bin>/.spied/calls.jsonl) and the runtime
// tests read it: what the runtime sent, what the netns path was at that
// moment, and how the plugin answered.
package cnicall

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// SpyDir is the directory, inside a CNI bin dir, that holds the real plugins
// behind their spied names and the call log.
const SpyDir = ".spied"

// LogName is the call log's file name inside SpyDir.
const LogName = "calls.jsonl"

// Netns states at the moment of a call.
const (
	NetnsEmpty   = "empty"   // CNI_NETNS=""
	NetnsMissing = "missing" // the path does not exist
	NetnsMounted = "netns"   // the path is an nsfs object (a mounted netns or /proc/<pid>/ns/net)
)

// Call is one CNI invocation of one plugin.
type Call struct {
	Time        time.Time `json:"time"`
	Plugin      string    `json:"plugin"`
	Command     string    `json:"command"`
	ContainerID string    `json:"containerID"`
	Netns       string    `json:"netns"`
	NetnsState  string    `json:"netnsState"`
	NetnsInode  string    `json:"netnsInode,omitempty"`
	IfName      string    `json:"ifName"`
	Args        string    `json:"args,omitempty"`
	Network     string    `json:"network,omitempty"`
	CNIVersion  string    `json:"cniVersion,omitempty"`
	PrevResult  bool      `json:"prevResult"`
	ExitCode    int       `json:"exitCode"`
	Stdout      string    `json:"stdout,omitempty"`
	Stderr      string    `json:"stderr,omitempty"`
	DurationMS  float64   `json:"durationMs"`
}

func (c Call) String() string {
	return fmt.Sprintf("%s %s container=%s netns=%q (%s) rc=%d", c.Plugin, c.Command, c.ContainerID, c.Netns, c.NetnsState, c.ExitCode)
}

// LogPath is the call log of a CNI bin dir.
func LogPath(binDir string) string { return filepath.Join(binDir, SpyDir, LogName) }

// Read returns the calls logged in binDir in the order they started (none
// if no call was made yet). The log is written as calls end: a plugin's IPAM
// call ends before the plugin itself.
func Read(binDir string) ([]Call, error) {
	f, err := os.Open(LogPath(binDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var calls []Call
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var c Call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return nil, fmt.Errorf("%s: %w", LogPath(binDir), err)
		}
		calls = append(calls, c)
	}
	slices.SortStableFunc(calls, func(a, b Call) int { return a.Time.Compare(b.Time) })
	return calls, sc.Err()
}

// Filter returns the calls for which keep is true.
func Filter(calls []Call, keep func(Call) bool) []Call {
	var out []Call
	for _, c := range calls {
		if keep(c) {
			out = append(out, c)
		}
	}
	return out
}
