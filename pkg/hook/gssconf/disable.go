package gssconf

import (
	"bytes"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxFileSize bounds the config files the hook reads. gssproxy configs are a
// few hundred bytes (Debian's two files) to about a kilobyte (EL7's single
// file); 1 MiB is a thousand times that, so no real config comes near it,
// and a file that size is read, parsed and edited in milliseconds with a few
// MiB of memory. Anything larger is an image trying to stall the hook past
// its runtime timeout or to press the node's memory.
const MaxFileSize = 1 << 20

// falseFor maps each true spelling, by length, to a false value of the same
// length: gssproxy trims the trailing blanks, and anything that is not a
// true spelling is false. A 1-byte value ("1") cannot hold "no": "0" is the
// one-byte false. Each new value changes the first byte, and a write of it
// cut short leaves a false mix too (nes, nos; nn; nrue, noue, "no e"), so a
// killed hook leaves every setting untouched or off (TestCutShortWriteIsFalse).
var falseFor = map[int]string{1: "0", 2: "no", 3: "no ", 4: "no  "}

// Edit is one kernel_nfsd value to overwrite in place: the bytes at Off in
// the file (in its own encoding) are Old and become New, of the same length.
type Edit struct {
	Line int // 1-based line number
	Off  int
	Old  []byte
	New  []byte
}

// Assignments lists every kernel_nfsd assignment in a config file, true or not.
func Assignments(content []byte) ([]Assignment, error) {
	text, _, err := decodeFile(content)
	if err != nil {
		return nil, err
	}
	var out []Assignment
	for i, line := range splitLines(string(text)) {
		body := cutNUL(trimEOL(line))
		if v := parseLine(body); v >= 0 {
			out = append(out, Assignment{Line: i + 1, Value: body[v:], True: IsTrue(body[v:])})
		}
	}
	return out, nil
}

// Edits returns the in-place edits that set every kernel_nfsd assignment
// gssproxy would read as true to a false value of the same length (see
// falseFor), in file order. Nothing else in the file changes: not its
// length, key spelling, indentation, line endings, encoding or any other
// byte. Applying them to content and calling Edits again returns none.
func Edits(content []byte) ([]Edit, error) {
	text, enc, err := decodeFile(content)
	if err != nil {
		return nil, err
	}
	var (
		edits []Edit
		off   = len(enc.bom) // raw offset of the current line
	)
	for i, line := range splitLines(string(text)) {
		body := cutNUL(trimEOL(line))
		if v := parseLine(body); v >= 0 && IsTrue(body[v:]) {
			value := strings.TrimRight(body[v:], blanks) // a true spelling: ASCII
			start := off + enc.rawLen(body[:v])
			edits = append(edits, Edit{
				Line: i + 1,
				Off:  start,
				Old:  bytes.Clone(content[start : start+enc.rawLen(value)]),
				New:  enc.encode([]byte(falseFor[len(value)]))[len(enc.bom):],
			})
		}
		off += enc.rawLen(line)
	}
	return edits, nil
}

// Apply returns a copy of content with edits applied.
func Apply(content []byte, edits []Edit) []byte {
	out := bytes.Clone(content)
	for _, e := range edits {
		copy(out[e.Off:], e.New)
	}
	return out
}

// Disable returns content with every true kernel_nfsd assignment turned off
// in place (Edits, then Apply) and how many it changed; with none, content is
// returned as is.
func Disable(content []byte) ([]byte, int, error) {
	edits, err := Edits(content)
	if err != nil || len(edits) == 0 {
		return content, 0, err
	}
	return Apply(content, edits), len(edits), nil
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

// rawLen is how many bytes s (decoded text) takes in the file's encoding,
// BOM excluded. decodeFile made sure the mapping is exact.
func (e encoding) rawLen(s string) int {
	switch e.width {
	case 2:
		n := 0
		for _, r := range s {
			n += 2 * utf16.RuneLen(r)
		}
		return n
	case 4:
		return 4 * utf8.RuneCountInString(s)
	}
	return len(s)
}

// splitLines splits after each "\n", keeping it.
func splitLines(s string) []string {
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// cutNUL returns line up to its first NUL byte: gssproxy's parser
// (ding-libs) handles a line's key and value as C strings, so what follows a
// NUL is never part of them ("kernel_nfsd = yes\x00zz" is on for gssproxy
// 0.9.1). Blanks before the NUL are then kept by gssproxy ("yes \x00" is
// off), but IsTrue trims them: such a value is turned off too, which is
// harmless.
func cutNUL(line string) string {
	if i := strings.IndexByte(line, 0); i >= 0 {
		return line[:i]
	}
	return line
}

// trimEOL returns line without its "\n" or "\r\n".
func trimEOL(line string) string {
	if s, ok := strings.CutSuffix(line, "\r\n"); ok {
		return s
	}
	return strings.TrimSuffix(line, "\n")
}
