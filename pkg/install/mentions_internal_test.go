package install

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mentionsLeakguard finds the name wherever it sits, across the 64 KiB
// chunks it reads, in any case; and not where it is not.
func TestMentionsLeakguardAcrossChunks(t *testing.T) {
	dir := t.TempDir()
	for _, at := range []int{0, 1, 64<<10 - 9, 64<<10 - 4, 64<<10 - 1, 64 << 10, 128<<10 - 5, 3 << 20} {
		for _, word := range []string{"leakguard", "LeakGuard"} {
			p := filepath.Join(dir, "f")
			data := strings.Repeat("x", at) + word + strings.Repeat("y", 100)
			if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
			if !mentionsLeakguard(p) {
				t.Errorf("%q at %d not found", word, at)
			}
		}
	}
	p := filepath.Join(dir, "none")
	if err := os.WriteFile(p, []byte(strings.Repeat("leakguar", 300<<10)), 0o644); err != nil {
		t.Fatal(err)
	}
	if mentionsLeakguard(p) {
		t.Error("found in a file without it")
	}
}
