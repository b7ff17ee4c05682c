package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// object is a JSON object kept as its members in file order, each value
// raw: editing a primary's config through it changes only what we touch,
// keeps key order, and keeps every number and string exactly as written
// (a map[string]any round trip turns large integers into floats).
type object []member

type member struct {
	Key   string
	Value json.RawMessage
}

// parseObject decodes one JSON object and nothing after it.
func parseObject(b []byte) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	var o object
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("object key is %v", tok)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("value of %q: %w", key, err)
		}
		o = append(o, member{Key: key, Value: v})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the JSON object")
	}
	return o, nil
}

// get returns the value of key as encoding/json (and so libcni) reads it:
// the last of duplicate keys wins.
func (o object) get(key string) (json.RawMessage, bool) {
	for i := len(o) - 1; i >= 0; i-- {
		if o[i].Key == key {
			return o[i].Value, true
		}
	}
	return nil, false
}

// set gives key the value v: in the place of its first occurrence (later
// duplicates dropped), or at the end.
func (o object) set(key string, v json.RawMessage) object {
	out := make(object, 0, len(o)+1)
	done := false
	for _, m := range o {
		if m.Key != key {
			out = append(out, m)
			continue
		}
		if !done {
			out = append(out, member{Key: key, Value: v})
			done = true
		}
	}
	if !done {
		out = append(out, member{Key: key, Value: v})
	}
	return out
}

// compact renders o on one line.
func (o object) compact() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(m.Key)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		if err := json.Compact(&b, m.Value); err != nil {
			return nil, fmt.Errorf("value of %q: %w", m.Key, err)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// render is o indented by two spaces, with a final newline: the shape CNI
// agents write.
func (o object) render() ([]byte, error) {
	c, err := o.compact()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := json.Indent(&b, c, "", "  "); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// rawArray decodes a JSON array into its raw elements.
func rawArray(v json.RawMessage) ([]json.RawMessage, error) {
	var a []json.RawMessage
	if err := json.Unmarshal(v, &a); err != nil {
		return nil, err
	}
	return a, nil
}

// marshalArray renders raw elements as one JSON array.
func marshalArray(a []json.RawMessage) (json.RawMessage, error) {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, e := range a {
		if i > 0 {
			b.WriteByte(',')
		}
		if err := json.Compact(&b, e); err != nil {
			return nil, err
		}
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}
