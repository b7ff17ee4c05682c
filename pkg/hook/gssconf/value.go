package gssconf

import "strings"

// Key is the setting that makes gssproxy write 1 to /proc/net/rpc/use-gss-proxy.
const Key = "kernel_nfsd"

// blanks are what the ini parser trims around keys and values.
const blanks = " \t\r\v\f"

// IsTrue reports whether gssproxy reads value as true: 1, on, true or yes,
// ASCII case-insensitive (strcasecmp), surrounding blanks trimmed. Anything
// else is false, including "yes # comment": the parser has no inline comments.
func IsTrue(value string) bool {
	v := strings.Trim(value, blanks)
	for _, t := range []string{"1", "on", "true", "yes"} {
		if asciiEqualFold(v, t) {
			return true
		}
	}
	return false
}

// asciiEqualFold is strcasecmp in the C locale: only A-Z and a-z are folded.
// strings.EqualFold is not: it also folds U+212A KELVIN SIGN to k and U+017F
// LONG S to s, which gssproxy does not.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if asciiLower(a[i]) != asciiLower(b[i]) {
			return false
		}
	}
	return true
}

func asciiLower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// Assignment is one "kernel_nfsd = value" line.
type Assignment struct {
	Line  int // 1-based line number
	Value string
	True  bool
}

// parseLine returns the offset where the value of a kernel_nfsd assignment
// starts in line (EOL removed), or -1 when the line is anything else:
// blank, comment, section header or another key.
func parseLine(line string) int {
	body := strings.TrimLeft(line, blanks)
	if body == "" || body[0] == '#' || body[0] == ';' || body[0] == '[' {
		return -1
	}
	eq := strings.IndexByte(line, '=')
	if eq < 0 || !asciiEqualFold(strings.Trim(line[:eq], blanks), Key) {
		return -1
	}
	v := eq + 1
	for v < len(line) && strings.IndexByte(blanks, line[v]) >= 0 {
		v++
	}
	return v
}
