package gssconf

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzAssignments: the parser never panics, refuses only what it cannot
// re-encode, and reports each value's truth as IsTrue does, in line order.
// Seeds: testdata/fuzz/FuzzAssignments.
func FuzzAssignments(f *testing.F) {
	f.Fuzz(func(t *testing.T, content []byte) {
		as, err := Assignments(content)
		if err != nil {
			if !errors.Is(err, ErrLossy) {
				t.Fatalf("error other than ErrLossy: %v", err)
			}
			return
		}
		last := 0
		for _, a := range as {
			if a.Line <= last || a.True != IsTrue(a.Value) {
				t.Fatalf("assignment %+v after line %d", a, last)
			}
			last = a.Line
		}
	})
}

// FuzzEdits checks the in-place edit on any file, also re-encoded with each
// byte-order mark gssproxy honours (bom selects one): Edits never panics;
// the edited file has the same length, differs only inside the edits'
// ranges, which are in order, disjoint and hold the bytes they claim;
// every kernel_nfsd assignment in it reads false (so it is off in every
// section), the same assignments on the same lines; and editing again
// changes nothing. Seeds: testdata/fuzz/FuzzEdits.
func FuzzEdits(f *testing.F) {
	f.Fuzz(func(t *testing.T, content []byte, bom uint8) {
		if i := int(bom) % (len(encodings) + 1); i > 0 {
			content = encodings[i-1].encode(content)
		}
		edits, err := Edits(content)
		out, n, derr := Disable(content)
		if err != nil || derr != nil {
			if !errors.Is(err, ErrLossy) || !errors.Is(derr, ErrLossy) {
				t.Fatalf("Edits: %v, Disable: %v; want ErrLossy for both", err, derr)
			}
			return
		}
		if n != len(edits) || !bytes.Equal(out, Apply(content, edits)) {
			t.Fatalf("Disable changed %d, Edits lists %d", n, len(edits))
		}
		if len(out) != len(content) {
			t.Fatalf("length %d -> %d", len(content), len(out))
		}
		inEdit := make([]bool, len(content))
		end := 0
		for _, e := range edits {
			if e.Off < end || len(e.Old) == 0 || len(e.Old) != len(e.New) || e.Off+len(e.Old) > len(content) ||
				!bytes.Equal(content[e.Off:e.Off+len(e.Old)], e.Old) || bytes.Equal(e.Old, e.New) {
				t.Fatalf("bad edit %+v (previous ended at %d)", e, end)
			}
			end = e.Off + len(e.Old)
			for i := e.Off; i < end; i++ {
				inEdit[i] = true
			}
		}
		for i := range content {
			if content[i] != out[i] && !inEdit[i] {
				t.Fatalf("byte %d changed outside every edit: %q -> %q", i, content, out)
			}
		}
		before, err := Assignments(content)
		if err != nil {
			t.Fatal(err)
		}
		after, err := Assignments(out)
		if err != nil {
			t.Fatalf("edited file no longer parses: %v", err)
		}
		if len(after) != len(before) {
			t.Fatalf("%d assignments before, %d after", len(before), len(after))
		}
		for i, a := range after {
			b := before[i]
			if a.True || a.Line != b.Line || (!b.True && a.Value != b.Value) {
				t.Fatalf("assignment %+v became %+v", b, a)
			}
		}
		if again, err := Edits(out); err != nil || len(again) != 0 {
			t.Fatalf("second Edits: %d, %v", len(again), err)
		}
	})
}
