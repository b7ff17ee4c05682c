package nsident

import (
	"errors"
	"fmt"
	"os"
)

// State is the outcome of comparing a CNI_NETNS path with a recorded netns.
type State int

const (
	// Alive: the path is the recorded netns; the main plugin can still enter it.
	Alive State = iota
	// Gone: the recorded netns cannot be reached through the path. It may be
	// freed, or leaked (alive but unreachable); either way the host side is ours
	// to clean up.
	Gone
	// Unknown: the path could not be examined (e.g. permission denied). Nothing
	// is decided on it: the caller leaves the host side alone.
	Unknown
)

func (s State) String() string {
	switch s {
	case Alive:
		return "alive"
	case Gone:
		return "gone"
	}
	return "unknown"
}

// Verdict says what a path is with respect to a recorded netns, and why.
type Verdict struct {
	State  State
	Reason string
}

// Classify compares path with the recorded identity. It never enters the
// namespace. Only an nsfs object with the recorded device and inode is Alive;
// an empty path, a missing path, a non-netns file and a different netns
// (a reused /proc/<pid>/ns/net, a new netns mounted at the same path, the
// host's own netns) are all Gone, each with its reason.
func Classify(path string, recorded Identity) Verdict {
	if path == "" {
		return Verdict{Gone, "CNI_NETNS is empty"}
	}
	got, err := OfPath(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return Verdict{Gone, fmt.Sprintf("netns path %s does not exist", path)}
	case errors.Is(err, ErrNotNetns):
		return Verdict{Gone, fmt.Sprintf("netns path %s is not a network namespace (leftover file)", path)}
	case err != nil:
		return Verdict{Unknown, fmt.Sprintf("netns path %s cannot be examined: %v", path, err)}
	case got != recorded:
		return Verdict{Gone, fmt.Sprintf("netns path %s is another namespace (%s, recorded %s)", path, got, recorded)}
	}
	return Verdict{Alive, fmt.Sprintf("netns path %s is the recorded namespace %s", path, recorded)}
}
