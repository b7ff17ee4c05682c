package hookpolicy

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func write(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hook.json")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	tests := []struct {
		content string
		want    Policy
	}{
		{`{}`, Policy{Mode: ModePrivileged}},
		{`{"mode":"all"}`, Policy{Mode: ModeAll}},
		{`{"mode":"off","failClosed":true,"logFile":"/var/log/leakguard-hook.log"}`,
			Policy{Mode: ModeOff, FailClosed: true, LogFile: "/var/log/leakguard-hook.log"}},
		{`{"mode":"privileged","failClosed":false}` + "\n", Policy{Mode: ModePrivileged}},
	}
	for _, tt := range tests {
		got, err := Load(write(t, tt.content))
		if err != nil || got != tt.want {
			t.Errorf("Load(%s) = %+v, %v; want %+v", tt.content, got, err, tt.want)
		}
	}
}

func TestLoadInvalid(t *testing.T) {
	tests := map[string]string{
		`{"mode":"everything"}`:         `mode "everything" is not one of`,
		`{"mode":"Privileged"}`:         `mode "Privileged"`,
		`{"mode":""}`:                   `mode ""`,
		`{"mdoe":"all"}`:                `unknown field "mdoe"`,
		`{"failClosed":"yes"}`:          `cannot unmarshal string`,
		`{"logFile":"hook.log"}`:        `not an absolute path`,
		`{"mode":"all"} {"mode":"off"}`: `trailing data`,
		`not json`:                      `invalid character`,
	}
	for content, msg := range tests {
		p := write(t, content)
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), p) {
			t.Errorf("Load(%s): err = %v, want it to name the file and say %q", content, err, msg)
		}
	}
}

func TestLoadMissingExplicit(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.json")); err == nil {
		t.Fatal("an explicit --config that does not exist must be an error")
	}
}

func TestLoadDefault(t *testing.T) {
	if _, err := os.Stat(DefaultPath); err == nil {
		t.Skipf("%s exists on this machine; default-missing case not testable", DefaultPath)
	}
	got, err := Load("")
	if err != nil || got != Default() {
		t.Fatalf("Load(\"\") without %s = %+v, %v", DefaultPath, got, err)
	}
}

// TestLoadOrDefault: an unusable policy file gives the default policy (never
// fail-closed, whatever the file says) plus the error; only its logFile is
// kept, when it can be read at all.
func TestLoadOrDefault(t *testing.T) {
	tests := []struct {
		name, path, msg string
		want            Policy
	}{
		{"invalid mode, failClosed asked", write(t, `{"mode":"sometimes","failClosed":true,"logFile":"/var/log/h.log"}`),
			`mode "sometimes"`, Policy{Mode: ModePrivileged, LogFile: "/var/log/h.log"}},
		{"unknown key", write(t, `{"mdoe":"off","failClosed":true}`), `unknown field "mdoe"`, Default()},
		{"relative logFile", write(t, `{"logFile":"h.log"}`), `not an absolute path`, Default()},
		{"not json", write(t, `mode: off`), `invalid character`, Default()},
		{"missing explicit", filepath.Join(t.TempDir(), "none.json"), `failed to read hook policy`, Default()},
		{"a directory", t.TempDir(), `failed to read hook policy`, Default()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadOrDefault(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.msg) || got != tt.want {
				t.Fatalf("LoadOrDefault = %+v, %v; want %+v and an error saying %q", got, err, tt.want, tt.msg)
			}
		})
	}
	valid := Policy{Mode: ModeOff, FailClosed: true, LogFile: "/var/log/h.log"}
	if got, err := LoadOrDefault(write(t, `{"mode":"off","failClosed":true,"logFile":"/var/log/h.log"}`)); err != nil || got != valid {
		t.Fatalf("valid policy: %+v, %v", got, err)
	}
}

// TestLoadHostileFile: a policy path that is a FIFO (even one with a writer
// that never writes), a directory or an oversized file is refused at once;
// LoadOrDefault then returns the default policy with the error. A symlink is
// followed (a ConfigMap mount is one).
func TestLoadHostileFile(t *testing.T) {
	tests := map[string]func(t *testing.T, p string){
		"fifo": func(t *testing.T, p string) { must(t, syscall.Mkfifo(p, 0o644)) },
		"fifo with a writer": func(t *testing.T, p string) {
			must(t, syscall.Mkfifo(p, 0o644))
			r, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
			must(t, err)
			w, err := os.OpenFile(p, os.O_WRONLY, 0)
			must(t, err)
			t.Cleanup(func() { w.Close(); r.Close() })
		},
		"directory": func(t *testing.T, p string) { must(t, os.Mkdir(p, 0o755)) },
		"too large": func(t *testing.T, p string) {
			must(t, os.WriteFile(p, []byte(`{"mode":"all"}`+strings.Repeat(" ", maxPolicy)), 0o644))
		},
	}
	for name, mk := range tests {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "hook.json")
			mk(t, p)
			done := make(chan struct{})
			go func() {
				defer close(done)
				if got, err := LoadOrDefault(p); err == nil || got != Default() {
					t.Errorf("LoadOrDefault = %+v, %v; want the default and an error", got, err)
				}
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("LoadOrDefault blocked")
			}
		})
	}
	target := write(t, `{"mode":"all"}`)
	link := filepath.Join(t.TempDir(), "hook.json")
	must(t, os.Symlink(target, link))
	if got, err := Load(link); err != nil || got.Mode != ModeAll {
		t.Fatalf("through a symlink: %+v, %v", got, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
