package install_test

import (
	"strings"
	"testing"

	"github.com/leakguard/leakguard/pkg/install"
)

// --plugin-config is checked by the plugin's own strict parse, and only
// leakguard's keys are accepted.
func TestParseEntry(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{in: "", want: `{"type":"leakguard"}`},
		{in: "  ", want: `{"type":"leakguard"}`},
		{in: `{}`, want: `{"type":"leakguard"}`},
		{in: `{"logLevel":"debug","stateDir":"/run/lg"}`, want: `{"type":"leakguard","logLevel":"debug","stateDir":"/run/lg"}`},
		{in: `{"type":"leakguard","pinNetns":true}`, want: `{"type":"leakguard","pinNetns":true}`},
		{in: `{"LogLevel":"warn"}`, want: `{"type":"leakguard","LogLevel":"warn"}`},
		{in: `{"logLevel":"loud"}`, err: "logLevel"},
		{in: `{"stateDir":"run/lg"}`, err: "stateDir"},
		{in: `{"stateDir":"/"}`, err: "stateDir"},
		{in: `{"pinNetns":"yes"}`, err: "pinNetns"},
		{in: `{"logFile":"x.log"}`, err: "logFile"},
		{in: `{"statedirr":"/run/lg"}`, err: `unknown key "statedirr"`},
		{in: `{"delegate":{"type":"bridge"}}`, err: `unknown key "delegate"`},
		{in: `{"name":"x"}`, err: `unknown key "name"`},
		{in: `{"type":"bridge"}`, err: "type"},
		{in: `{"logLevel":"info","logLevel":"debug"}`, err: "twice"},
		{in: `{"logLevel":"info"`, err: "not a JSON object"},
		{in: `["logLevel"]`, err: "not a JSON object"},
		{in: `{"logLevel":"info"} {}`, err: "not a JSON object"},
	} {
		e, err := install.ParseEntry(tt.in)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("ParseEntry(%s): %v", tt.in, err)
		case tt.err == "" && e.String() != tt.want:
			t.Errorf("ParseEntry(%s) = %s, want %s", tt.in, e, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("ParseEntry(%s) = %v, want an error about %s", tt.in, err, tt.err)
		}
	}
}
