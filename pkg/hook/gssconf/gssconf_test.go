package gssconf

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"unicode/utf16"
)

func TestIsTrue(t *testing.T) {
	truths := []string{"1", "on", "ON", "On", "true", "TRUE", "True", "yes", "YES", "Yes", "yEs",
		" yes", "yes ", "\tyes\t", " \t on \t ", "yes\r"}
	lies := []string{"", "0", "off", "false", "no", "NO", "y", "ye", "t", "2", "01", "yes!", "yes # comment",
		"yes;", "yes ; c", "'yes'", `"yes"`, "enabled", "y e s", "yes\\", "no yes", "\u00a0yes",
		// Only ASCII letters fold, as in strcasecmp: not LONG S, KELVIN SIGN, dotted I.
		"ye\u017f", "YE\u017f", "tru\u0130", "\u212Aon"}
	for _, v := range truths {
		if !IsTrue(v) {
			t.Errorf("IsTrue(%q) = false, gssproxy reads it as true", v)
		}
	}
	for _, v := range lies {
		if IsTrue(v) {
			t.Errorf("IsTrue(%q) = true, gssproxy reads it as false", v)
		}
	}
}

func TestReadOrder(t *testing.T) {
	names := []string{"nfs-server.conf", "100-x.conf", "24-x.conf.disabled", "99-a.conf", "24-nfs-server.conf",
		"00-b.conf", "ab-x.conf", "24-.conf", "1-x.conf", "24-x.CONF", "24_x.conf", "24-B.conf", "24-a.conf",
		"gssproxy.conf", ".24-x.conf", "24-x.conf~", "24-x.conf.rpmnew", "24-x y.conf", "24-\nx.conf"}
	want := []string{"gssproxy.conf", "00-b.conf", "24-\nx.conf", "24-B.conf", "24-a.conf", "24-nfs-server.conf", "24-x y.conf", "99-a.conf"}
	if got := ReadOrder(names); !reflect.DeepEqual(got, want) {
		t.Errorf("ReadOrder:\n got %q\nwant %q", got, want)
	}
}

func TestDisable(t *testing.T) {
	tests := []struct {
		name, in, want string
		n              int
	}{
		{"debian drop-in",
			"[service/nfs-server]\n  mechs = krb5\n  kernel_nfsd = yes\n  euid = 0\n",
			"[service/nfs-server]\n  mechs = krb5\n  kernel_nfsd = no \n  euid = 0\n", 1},
		{"no spaces", "kernel_nfsd=yes\n", "kernel_nfsd=no \n", 1},
		{"one byte: 1 becomes 0", "kernel_nfsd=1\n", "kernel_nfsd=0\n", 1},
		{"tabs kept", "\tkernel_nfsd\t=\t1\t\n", "\tkernel_nfsd\t=\t0\t\n", 1},
		{"key case kept", "KERNEL_NFSD = On\n", "KERNEL_NFSD = no\n", 1},
		{"mixed key case", "Kernel_Nfsd = TRUE\n", "Kernel_Nfsd = no  \n", 1},
		{"trailing blanks kept", "kernel_nfsd = yes \t\v\f\n", "kernel_nfsd = no  \t\v\f\n", 1},
		{"crlf", "[service/nfs-server]\r\n kernel_nfsd = yes\r\n euid = 0\r\n",
			"[service/nfs-server]\r\n kernel_nfsd = no \r\n euid = 0\r\n", 1},
		{"lone cr at the end", "kernel_nfsd = yes\r", "kernel_nfsd = no \r", 1},
		{"no final newline", "a = b\nkernel_nfsd = yes", "a = b\nkernel_nfsd = no ", 1},
		{"no final newline crlf", "a = b\r\nkernel_nfsd = true", "a = b\r\nkernel_nfsd = no  ", 1},
		{"utf-8 bom", "\ufeffkernel_nfsd = yes\n", "\ufeffkernel_nfsd = no \n", 1},
		{"non-ascii before the value", "[service/n\u00e9\U0001F600]\nkernel_nfsd = yes\n", "[service/n\u00e9\U0001F600]\nkernel_nfsd = no \n", 1},
		{"dup keys first false: later true still turned off", "kernel_nfsd = no\nkernel_nfsd = yes\n",
			"kernel_nfsd = no\nkernel_nfsd = no \n", 1},
		{"dup keys both true", "kernel_nfsd = yes\nkernel_nfsd = 1\n", "kernel_nfsd = no \nkernel_nfsd = 0\n", 2},
		{"dup sections in one file", "[service/a]\nkernel_nfsd = yes\n[service/b]\n[service/a]\nkernel_nfsd = on\n",
			"[service/a]\nkernel_nfsd = no \n[service/b]\n[service/a]\nkernel_nfsd = no\n", 2},
		{"inline comment is false", "kernel_nfsd = yes # on\n", "", 0},
		{"inline semicolon is false", "kernel_nfsd = yes ; on\n", "", 0},
		{"false spellings", "kernel_nfsd = no\nkernel_nfsd = 0\nkernel_nfsd = off\nkernel_nfsd = false\nkernel_nfsd =\n", "", 0},
		{"comments", "# kernel_nfsd = yes\n; kernel_nfsd = yes\n  # kernel_nfsd = yes\n#kernel_nfsd=1\n", "", 0},
		{"other keys", "kernel_nfsd_x = yes\nxkernel_nfsd = yes\nkernel nfsd = yes\nkernel_nfsd yes\n[kernel_nfsd = yes]\n", "", 0},
		{"value on next line", "kernel_nfsd =\n   yes\n", "", 0},
		// gssproxy compares keys with ASCII strcasecmp; Unicode case folding
		// (LONG S folds to s, KELVIN SIGN to k) does not apply.
		{"long s in key", "kernel_nf\u017fd = yes\n", "", 0},
		{"kelvin sign in key", "\u212Aernel_nfsd = yes\n", "", 0},
		{"kelvin sign and long s in upper-case key", "\u212AERNEL_NF\u017fD = yes\n", "", 0},
		{"empty", "", "", 0},
		// gssproxy's parser (ding-libs) works on C strings: a line ends, for
		// the key and the value, at its first NUL byte. The real gssproxy
		// 0.9.1 arms on "kernel_nfsd = yes\x00zz" (test/hook TestOracle).
		{"NUL after the value", "kernel_nfsd = yes\x00zz\n", "kernel_nfsd = no \x00zz\n", 1},
		{"NUL right after the value", "kernel_nfsd = 1\x00\n", "kernel_nfsd = 0\x00\n", 1},
		{"NUL after blanks after the value", "kernel_nfsd = on \x00\n", "kernel_nfsd = no \x00\n", 1},
		{"NUL before the value", "kernel_nfsd = \x00yes\n", "", 0},
		{"NUL in the key", "kernel_nfsd\x00 = yes\n", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if tt.n == 0 {
				want = tt.in
			}
			got, n, err := Disable([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.n || string(got) != want {
				t.Fatalf("Disable(%q) = %q, %d; want %q, %d", tt.in, got, n, want, tt.n)
			}
			again, n2, err := Disable(got)
			if err != nil || n2 != 0 || !bytes.Equal(again, got) {
				t.Fatalf("second Disable changed %d settings (err %v): %q", n2, err, again)
			}
			as, err := Assignments(got)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range as {
				if a.True {
					t.Errorf("line %d still true after Disable: %q", a.Line, a.Value)
				}
			}
		})
	}
}

// TestEveryTrueSpellingSameLength: every true spelling gssproxy accepts, in
// every case and with or without blanks around it, becomes a false value of
// exactly its length; only the value's own bytes change.
func TestEveryTrueSpellingSameLength(t *testing.T) {
	for _, v := range trueSpellings() {
		for _, pad := range [][2]string{{"", ""}, {" ", ""}, {"", " "}, {"\t ", " \t"}} {
			line := "kernel_nfsd =" + pad[0] + v + pad[1]
			in := []byte("[service/nfs-server]\n" + line + "\neuid = 0\n")
			edits, err := Edits(in)
			if err != nil || len(edits) != 1 {
				t.Fatalf("%q: %d edits, %v", line, len(edits), err)
			}
			e := edits[0]
			if string(e.Old) != v || len(e.New) != len(v) || IsTrue(string(e.New)) {
				t.Fatalf("%q: edit %+v", line, e)
			}
			out := Apply(in, edits)
			if len(out) != len(in) {
				t.Fatalf("%q: length %d -> %d", line, len(in), len(out))
			}
			for i := range in {
				if in[i] != out[i] && (i < e.Off || i >= e.Off+len(e.Old)) {
					t.Fatalf("%q: byte %d changed outside the value (%q -> %q)", line, i, in, out)
				}
			}
		}
	}
}

// trueSpellings lists 1, on, true and yes in every ASCII case.
func trueSpellings() []string {
	var out []string
	for _, w := range []string{"1", "on", "true", "yes"} {
		for mask := 0; mask < 1<<len(w); mask++ {
			b := []byte(w)
			for i := range b {
				if mask&(1<<i) != 0 {
					b[i] = asciiUpper(b[i])
				}
			}
			if s := string(b); !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

func asciiUpper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

func TestDisableEncodings(t *testing.T) {
	in := "[service/nfs-server]\r\n  kernel_nfsd = yes\r\n"
	want := "[service/nfs-server]\r\n  kernel_nfsd = no \r\n"
	for _, e := range encodings {
		t.Run(fmt.Sprintf("bom %x", e.bom), func(t *testing.T) {
			got, n, err := Disable(e.encode([]byte(in)))
			if err != nil || n != 1 {
				t.Fatalf("Disable: %d changes, %v", n, err)
			}
			if !bytes.Equal(got, e.encode([]byte(want))) {
				t.Fatalf("got %q", got)
			}
			if _, n, _ := Disable(got); n != 0 {
				t.Fatalf("second run changed %d", n)
			}
		})
	}
}

func TestDisableUTF16Explicit(t *testing.T) {
	// The bytes iconv -t UTF-16LE produces, with BOM: gssproxy reads them.
	// A character outside the BMP (a surrogate pair) comes before the value.
	u := utf16.Encode([]rune("[\U0001F600]\nkernel_nfsd = yes\n"))
	b := []byte{0xFF, 0xFE}
	for _, c := range u {
		b = append(b, byte(c), byte(c>>8))
	}
	edits, err := Edits(b)
	if err != nil || len(edits) != 1 {
		t.Fatalf("Edits: %d, %v", len(edits), err)
	}
	if e := edits[0]; !bytes.Equal(e.Old, []byte{'y', 0, 'e', 0, 's', 0}) || !bytes.Equal(e.New, []byte{'n', 0, 'o', 0, ' ', 0}) {
		t.Fatalf("edit %+v", e)
	}
	got := Apply(b, edits)
	if len(got) != len(b) || !bytes.HasPrefix(got, []byte{0xFF, 0xFE, '[', 0}) {
		t.Fatalf("not UTF-16LE with BOM, same length: % x", got)
	}
}

func TestDisableLossy(t *testing.T) {
	for name, b := range map[string][]byte{
		"odd utf-16":          append([]byte{0xFF, 0xFE}, 'k', 0, 'x'),
		"lone surrogate":      {0xFE, 0xFF, 0xD8, 0x00, 0x00, 'a'},
		"utf-32 out of range": {0x00, 0x00, 0xFE, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF},
	} {
		if _, _, err := Disable(b); !errors.Is(err, ErrLossy) {
			t.Errorf("%s: err = %v, want ErrLossy", name, err)
		}
	}
}

func TestAssignments(t *testing.T) {
	as, err := Assignments([]byte("[s]\nkernel_nfsd = yes # x\n KERNEL_NFSD=1\n#kernel_nfsd = yes\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Assignment{{2, "yes # x", false}, {3, "1", true}}
	if !reflect.DeepEqual(as, want) {
		t.Fatalf("got %+v want %+v", as, want)
	}
}

// TestCutShortWriteIsFalse: a write of the new value cut short after any
// number of bytes (the hook killed mid-pwrite) leaves a value gssproxy reads
// as false, or the old true one when no byte landed: never anything else.
func TestCutShortWriteIsFalse(t *testing.T) {
	for _, v := range trueSpellings() {
		in := []byte("kernel_nfsd = " + v + "\n")
		edits, err := Edits(in)
		if err != nil || len(edits) != 1 {
			t.Fatalf("%q: %d edits, %v", v, len(edits), err)
		}
		e := edits[0]
		for n := 1; n <= len(e.New); n++ {
			out := bytes.Clone(in)
			copy(out[e.Off:], e.New[:n])
			as, err := Assignments(out)
			if err != nil || len(as) != 1 || as[0].True {
				t.Fatalf("%q with %d of %d new bytes written: %q reads true (%v)", v, n, len(e.New), out, err)
			}
		}
	}
}
