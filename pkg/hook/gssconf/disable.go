package gssconf

import (
	"bytes"
	"fmt"
	"strings"
)

// Marker starts the comment Disable adds above each line it changes.
const Marker = "# leakguard-hook:"

// Assignments lists every kernel_nfsd assignment in a config file, true or not.
func Assignments(content []byte) ([]Assignment, error) {
	text, _, err := decodeFile(content)
	if err != nil {
		return nil, err
	}
	var out []Assignment
	for i, line := range splitLines(string(text)) {
		body, _ := cutEOL(line)
		if v := parseLine(body); v >= 0 {
			out = append(out, Assignment{Line: i + 1, Value: body[v:], True: IsTrue(body[v:])})
		}
	}
	return out, nil
}

// Disable rewrites every kernel_nfsd assignment gssproxy would read as true
// to "no", keeping the key's spelling, indentation, line endings and
// encoding, and puts a full-line comment above it. It returns the new
// content and how many assignments it changed; with none, content is
// returned as is. Running it on its own output changes nothing.
func Disable(content []byte) ([]byte, int, error) {
	text, enc, err := decodeFile(content)
	if err != nil {
		return nil, 0, err
	}
	lines := splitLines(string(text))
	defaultEOL := "\n"
	if len(lines) > 0 {
		if _, eol := cutEOL(lines[0]); eol == "\r\n" {
			defaultEOL = eol
		}
	}
	var b strings.Builder
	changed := 0
	for _, line := range lines {
		body, eol := cutEOL(line)
		v := parseLine(body)
		if v < 0 || !IsTrue(body[v:]) {
			b.WriteString(line)
			continue
		}
		commentEOL := eol
		if commentEOL == "" {
			commentEOL = defaultEOL
		}
		fmt.Fprintf(&b, "%s %s was %q, set to no to keep gssproxy from enabling kernel NFS support (netns leak)%s",
			Marker, Key, strings.Trim(body[v:], blanks), commentEOL)
		b.WriteString(body[:v] + "no" + eol)
		changed++
	}
	if changed == 0 {
		return content, 0, nil
	}
	return enc.encode([]byte(b.String())), changed, nil
}

// decodeFile decodes content and refuses files it could not write back
// unchanged apart from the edit.
func decodeFile(content []byte) ([]byte, encoding, error) {
	enc := detect(content)
	text, err := enc.decode(content)
	if err != nil {
		return nil, enc, err
	}
	if !bytes.Equal(enc.encode(text), content) {
		return nil, enc, ErrLossy
	}
	return text, enc, nil
}

// splitLines splits after each "\n", keeping it.
func splitLines(s string) []string {
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// cutEOL separates a line from its "\n" or "\r\n".
func cutEOL(line string) (string, string) {
	if strings.HasSuffix(line, "\r\n") {
		return line[:len(line)-2], "\r\n"
	}
	if strings.HasSuffix(line, "\n") {
		return line[:len(line)-1], "\n"
	}
	return line, ""
}
