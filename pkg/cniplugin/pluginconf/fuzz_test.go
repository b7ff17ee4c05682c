package pluginconf_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/leakguard/leakguard/pkg/cniplugin/pluginconf"
)

// FuzzParse checks the two parses against each other on any stdin (seed
// corpus in testdata/fuzz/FuzzParse, run by plain `go test`):
//   - neither panics; a strict failure is CNI error 7;
//   - what the strict parse (ADD) accepts, the lenient one (DEL) accepts as
//     is: the same config, nothing worked around;
//   - the lenient parse yields a config for every JSON object whose CNI
//     fields (name, cniVersion, prevResult, ...) decode, whatever
//     leakguard's own keys hold (README: only undecodable CNI fields fail a
//     DEL, and ADD rejects them too), and that config is usable: every
//     field within the strict rules.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, stdin []byte) {
		strict, err := pluginconf.Parse(stdin)
		lenient, problems := pluginconf.ParseForDel(stdin)

		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || e.Code != types.ErrInvalidNetworkConfig {
				t.Fatalf("Parse(%q) failed with %v, want CNI error %d", stdin, err, types.ErrInvalidNetworkConfig)
			}
		} else {
			if len(problems) > 0 {
				t.Fatalf("Parse accepted %q but ParseForDel worked around %v", stdin, problems)
			}
			if !reflect.DeepEqual(strict, lenient) {
				t.Fatalf("Parse and ParseForDel disagree on %q:\nstrict  %+v\nlenient %+v", stdin, strict, lenient)
			}
		}

		if lenient == nil {
			if isJSONObject(stdin) && cniFieldsDecode(stdin) {
				t.Fatalf("ParseForDel(%q) gave no config for a JSON object whose CNI fields decode: %v", stdin, problems)
			}
			if len(problems) == 0 {
				t.Fatalf("ParseForDel(%q) gave neither a config nor a problem", stdin)
			}
			return
		}
		usable(t, stdin, lenient)
	})
}

func isJSONObject(b []byte) bool {
	return json.Valid(b) && bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{"))
}

func cniFieldsDecode(b []byte) bool {
	var c types.PluginConf
	return json.Unmarshal(b, &c) == nil
}

// usable checks the rules the strict parse enforces, on a lenient config.
func usable(t *testing.T, stdin []byte, c *pluginconf.Config) {
	t.Helper()
	cleanAbs := func(p string) bool { return filepath.IsAbs(p) && filepath.Clean(p) == p && p != "/" }
	switch {
	case !cleanAbs(c.StateDir):
		t.Fatalf("ParseForDel(%q): stateDir %q", stdin, c.StateDir)
	case !cleanAbs(c.PinDir):
		t.Fatalf("ParseForDel(%q): pinDir %q", stdin, c.PinDir)
	case c.LogFile != "" && !filepath.IsAbs(c.LogFile):
		t.Fatalf("ParseForDel(%q): logFile %q", stdin, c.LogFile)
	}
	if _, err := c.Level(); err != nil {
		t.Fatalf("ParseForDel(%q): %v", stdin, err)
	}
	if c.PrevResult == nil && c.RawPrevResult != nil {
		t.Fatalf("ParseForDel(%q): raw prevResult kept without a parsed one", stdin)
	}
}
