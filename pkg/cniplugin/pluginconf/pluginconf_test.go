package pluginconf

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(`{"cniVersion":"1.0.0","name":"n","type":"leakguard"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != DefaultStateDir || c.PinDir != DefaultPinDir || c.LogLevel != DefaultLogLevel || c.PinNetns || c.LogFile != "" {
		t.Fatalf("defaults not applied: %+v", c)
	}
	// Pins follow the state dir unless pinDir is set.
	c, err = Parse([]byte(`{"cniVersion":"1.0.0","name":"n","stateDir":"/run/other"}`))
	if err != nil || c.PinDir != "/run/other/netns" {
		t.Fatalf("pinDir = %q, %v; want /run/other/netns", c.PinDir, err)
	}
}

// A mistyped field fails ADD with code 7 naming that field (and its value).
func TestMistypedFieldNamed(t *testing.T) {
	for field, conf := range map[string]string{
		"stateDir":            `{"stateDir":7}`,
		"pinNetns":            `{"pinNetns":"yes"}`,
		"logLevel":            `{"logLevel":["debug"]}`,
		"cni.dev/attachments": `{"cni.dev/attachments":{"a":1}}`,
	} {
		_, err := Parse([]byte(conf))
		var e *types.Error
		if !errors.As(err, &e) || e.Code != types.ErrInvalidNetworkConfig || !strings.HasPrefix(e.Msg, field+":") {
			t.Errorf("%s: got %v, want code 7 naming %q", conf, err, field)
		}
	}
}

// Every invalid value is CNI error 7 naming its field.
func TestInvalidValues(t *testing.T) {
	for field, conf := range map[string]string{
		"stateDir": `{"stateDir":"run/leakguard"}`,
		"pinDir":   `{"pinDir":"/"}`,
		"logFile":  `{"logFile":"leakguard.log"}`,
		"logLevel": `{"logLevel":"verbose"}`,
		"parse":    `{"stateDir":"/run/x"`,
	} {
		_, err := Parse([]byte(conf))
		var e *types.Error
		if !errors.As(err, &e) || e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, field) {
			t.Errorf("%s: got %v, want code 7 naming %q", conf, err, field)
		}
	}
}

func TestPrevResultParsedInConfigVersion(t *testing.T) {
	c, err := Parse([]byte(`{"cniVersion":"0.3.1","name":"n","type":"leakguard",
		"prevResult":{"cniVersion":"0.3.1","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","address":"10.0.0.2/24","interface":0}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.PrevResult == nil || c.PrevResult.Version() != "0.3.1" {
		t.Fatalf("prevResult = %v", c.PrevResult)
	}
	if _, err := Parse([]byte(`{"cniVersion":"1.0.0","prevResult":{"cniVersion":"1.0.0","ips":"x"}}`)); err == nil {
		t.Fatal("a malformed prevResult must be rejected")
	}
}

// An absent or null list is not an empty one: only a given list may make
// attachments stale.
func TestGCList(t *testing.T) {
	cases := []struct {
		conf  string
		given bool
		valid int
	}{
		{`{}`, false, 0},
		{`{"cni.dev/valid-attachments":null}`, false, 0},
		{`{"cni.dev/valid-attachments":[]}`, true, 0},
		{`{"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}`, true, 1},
		{`{"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"eth0"}]}`, true, 2},
	}
	for _, c := range cases {
		conf, err := Parse([]byte(c.conf))
		if err != nil {
			t.Fatal(err)
		}
		valid, given := conf.GCList()
		if given != c.given || len(valid) != c.valid {
			t.Errorf("%s: GCList = %v, %v; want %d entries, given=%v", c.conf, valid, given, c.valid, c.given)
		}
	}
}

// DEL works around what it can: each bad field falls back to its default
// and is reported; a bad prevResult is dropped.
func TestParseForDel(t *testing.T) {
	c, problems := ParseForDel([]byte(`{"cniVersion":"1.0.0","name":"n","logLevel":"loud","stateDir":"rel","pinDir":"/",
		"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"not-an-ip"}]}}`))
	if c == nil || c.StateDir != DefaultStateDir || c.PinDir != DefaultPinDir || c.LogLevel != DefaultLogLevel || c.PrevResult != nil || c.Name != "n" {
		t.Fatalf("config = %+v", c)
	}
	if len(problems) != 4 {
		t.Fatalf("want 4 problems (logLevel, stateDir, pinDir, prevResult), got %v", problems)
	}
	c, problems = ParseForDel([]byte(`{"cniVersion":"1.0.0","name":"n","stateDir":7,"logLevel":"debug"}`))
	if c == nil || c.Name != "n" || c.StateDir != DefaultStateDir || c.LogLevel != "debug" || len(problems) != 1 {
		t.Fatalf("mistyped field: config %+v, problems %v", c, problems)
	}
	// A stateDir DEL cannot use may miss every record: severe (logged as an error).
	var fe *FieldError
	if !errors.As(problems[0], &fe) || fe.Field != "stateDir" || !fe.Severe {
		t.Fatalf("mistyped stateDir: problem %#v, want a severe stateDir FieldError", problems[0])
	}
	// A mistyped field elsewhere (a config edited since ADD) must not cost
	// the custom stateDir: DEL would miss every record.
	c, problems = ParseForDel([]byte(`{"cniVersion":"1.0.0","name":"n","stateDir":"/run/custom","pinNetns":"yes"}`))
	if c == nil || c.StateDir != "/run/custom" || c.PinDir != "/run/custom/netns" || c.PinNetns || len(problems) != 1 {
		t.Fatalf("mistyped pinNetns: config %+v, problems %v", c, problems)
	}
	if !errors.As(problems[0], &fe) || fe.Field != "pinNetns" || fe.Severe {
		t.Fatalf("mistyped pinNetns: problem %#v, want a non-severe pinNetns FieldError", problems[0])
	}
	if c, _ := ParseForDel([]byte(`[1]`)); c != nil {
		t.Fatal("a non-object has no config")
	}
	c, problems = ParseForDel([]byte(`{"cniVersion":"1.0.0","name":"n","stateDir":"/run/lg"}`))
	if len(problems) != 0 || c.StateDir != "/run/lg" {
		t.Fatalf("valid config: %+v %v", c, problems)
	}
}

// OwnKey matches leakguard's settings as the parse does (case-insensitively)
// and leaves out what an installer never chains (delegate, the GC list).
func TestOwnKey(t *testing.T) {
	for in, want := range map[string]string{
		"stateDir": "stateDir", "statedir": "stateDir", "PINNETNS": "pinNetns", "logFile": "logFile",
		"delegate": "", "cni.dev/attachments": "", "type": "", "stateDirr": "",
	} {
		if got := OwnKey(in); got != want {
			t.Errorf("OwnKey(%q) = %q, want %q", in, got, want)
		}
	}
	if got := strings.Join(OwnKeys(), ","); got != "stateDir,pinDir,logFile,logLevel,pinNetns" {
		t.Errorf("OwnKeys = %s", got)
	}
}
