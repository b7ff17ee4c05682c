package record

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// maxName keeps names well under NAME_MAX with room for suffixes.
const maxName = 200

// Name maps the key to a single, safe path component, used for its state
// files and its netns pin: every byte outside [A-Za-z0-9.-] (and a leading
// dot) is %-escaped, so '/' can never appear and no name is hidden; fields
// are joined by '_'; a name that would be too long becomes a hash of the
// key. Distinct keys never share a name.
func (k Key) Name() string {
	name := escape(k.Network) + "_" + escape(k.ContainerID) + "_" + escape(k.IfName)
	if len(name) > maxName {
		sum := sha256.Sum256([]byte(hashInput(k, name)))
		name = "h-" + hex.EncodeToString(sum[:])
	}
	return name
}

// hashInput is what a long name hashes. The fields joined by NUL (what
// earlier builds hashed, kept so that their records are still found) are
// ambiguous only when a field holds a NUL itself; such keys hash their
// escaped name instead, which is injective and holds no NUL, so the two
// forms never meet.
func hashInput(k Key, escaped string) string {
	if strings.ContainsRune(k.Network+k.ContainerID+k.IfName, 0) {
		return escaped
	}
	return k.Network + "\x00" + k.ContainerID + "\x00" + k.IfName
}

func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.' && i > 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
