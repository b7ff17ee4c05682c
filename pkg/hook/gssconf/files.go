// Package gssconf knows which gssproxy configuration files gssproxy reads and
// how it reads their kernel_nfsd settings, and computes the in-place edit that
// overwrites every value gssproxy would take as true with a false one of the
// same length. Facts it relies on were checked against
// the real gssproxy 0.9.1 binary (ding-libs ini parser).
package gssconf

import (
	"regexp"
	"sort"
)

const (
	// Dir is gssproxy's default configuration directory, relative to a root.
	Dir = "etc/gssproxy"
	// MainFile is read first, before any drop-in.
	MainFile = "gssproxy.conf"
)

// Bounds on what the hook looks at in Dir. A real gssproxy config directory
// holds gssproxy.conf and a handful of drop-ins (Debian ships one,
// 24-nfs-server.conf). The caps
// keep a hostile image from making the hook list or read without end: at
// most MaxDirEntries names listed, MaxDropIns drop-ins read, MaxFileSize each
// (see disable.go), which is well under a second of work.
const (
	MaxDirEntries = 4096
	MaxDropIns    = 64
)

// dropIn is gssproxy's own pattern for drop-ins, "^[0-9]{2}-.+\.conf$"
// (POSIX regex: "." also matches a newline).
var dropIn = regexp.MustCompile(`(?s)^[0-9]{2}-.+\.conf$`)

// IsDropIn reports whether gssproxy reads a file of this name from Dir.
func IsDropIn(name string) bool { return dropIn.MatchString(name) }

// ReadOrder returns the names gssproxy reads, in its order: MainFile, then
// the drop-ins among names in byte order. Whether each is a regular file is
// for the caller to check; gssproxy skips anything else.
func ReadOrder(names []string) []string {
	order := []string{MainFile}
	var drops []string
	for _, n := range names {
		if IsDropIn(n) {
			drops = append(drops, n)
		}
	}
	sort.Strings(drops)
	return append(order, drops...)
}
