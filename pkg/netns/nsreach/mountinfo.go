package nsreach

import (
	"bytes"
	"strconv"
	"strings"
)

// Mount is the part of one /proc/<pid>/mountinfo line that nsreach needs.
type Mount struct {
	// Root is the mounted object's root: for an nsfs mount the namespace
	// file name, e.g. "net:[4026532291]".
	Root       string
	MountPoint string
	FSType     string
}

// ParseMountinfo parses mountinfo text (proc(5)); malformed lines are
// skipped. Octal escapes (\040 for a space, ...) are decoded.
func ParseMountinfo(b []byte) []Mount {
	var out []Mount
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		f := strings.Fields(string(line))
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		if len(f) < 7 {
			continue
		}
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(f) {
			continue
		}
		out = append(out, Mount{Root: unescape(f[3]), MountPoint: unescape(f[4]), FSType: f[sep+1]})
	}
	return out
}

// unescape decodes the \ooo octal escapes the kernel uses for blanks,
// backslashes and newlines in mountinfo paths.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
