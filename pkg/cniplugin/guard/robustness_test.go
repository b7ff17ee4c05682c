package guard_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/test/nsutil"
)

func TestDelIsIdempotent(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	nsutil.LeakBySocket(t, f.pod)
	for i := 0; i < 3; i++ {
		if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
		f.mustBeGone(f.hostVeth.Name)
	}
	assertStateDirEmpty(t, f.stateDir)
}

// Without a record (ADD never ran, leakguard was installed later, or the
// record was lost) nothing is touched unless prevResult names a host veth
// that proves to be the pod's: same name and MAC, and its peer netns
// reachable by nothing.
func TestDelWithoutRecord(t *testing.T) {
	t.Run("no prevResult", func(t *testing.T) {
		f := newFixture(t)
		nsutil.LeakBySocket(t, f.pod)
		if err := f.del("", "0.3.1", prevOrNil(nil)); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		f.mustExist(f.hostVeth.Name, f.hostVeth.Index)
	})
	t.Run("netns alive", func(t *testing.T) {
		f := newFixture(t)
		if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		f.mustExist(f.hostVeth.Name, f.hostVeth.Index)
	})
	t.Run("leaked: proved by name, MAC and unreachable peer", func(t *testing.T) {
		f := newFixture(t)
		nsutil.LeakBySocket(t, f.pod)
		if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		f.mustBeGone(f.hostVeth.Name)
	})
	t.Run("peer netns still reachable", func(t *testing.T) {
		f := newFixture(t)
		nsutil.LeakByFD(t, f.pod) // path gone, but this process holds an fd
		if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		f.mustExist(f.hostVeth.Name, f.hostVeth.Index)
	})
	t.Run("MAC differs from prevResult", func(t *testing.T) {
		f := newFixture(t)
		nsutil.LeakBySocket(t, f.pod)
		prev := f.prevResult()
		prev.Interfaces[0].Mac = "02:00:00:00:00:42"
		if err := f.del(f.podPath, "1.0.0", prev); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		f.mustExist(f.hostVeth.Name, f.hostVeth.Index)
	})
}

// A corrupt record does not make DEL fail: it is moved aside and kept.
func TestCorruptRecordIsMovedAside(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	files := recordFiles(t, f.stateDir)
	if len(files) != 1 {
		t.Fatalf("want one record file, got %v", files)
	}
	if err := os.WriteFile(files[0], []byte(`{"schema":1,"network":`), 0o600); err != nil {
		t.Fatal(err)
	}
	nsutil.LeakBySocket(t, f.pod)
	if err := f.del(f.podPath, "0.3.1", prevOrNil(nil)); err != nil {
		t.Fatalf("DEL with corrupt record: %v", err)
	}
	f.mustExist(f.hostVeth.Name, f.hostVeth.Index) // nothing provable: left alone
	moved, _ := filepath.Glob(files[0] + ".corrupt-*")
	if len(moved) != 1 {
		t.Fatalf("corrupt record should be kept aside, found %v", moved)
	}
	if b, _ := os.ReadFile(moved[0]); string(b) != `{"schema":1,"network":` {
		t.Fatalf("kept record altered: %q", b)
	}
	mustRemovedFile(t, files[0])
}

// Records of another boot name ifindexes and inodes that mean nothing now.
func TestRecordOfAnotherBootIsNeverActedUpon(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	path := recordFiles(t, f.stateDir)[0]
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := store.CurrentBootID()
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), boot, "00000000-0000-0000-0000-000000000000", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	nsutil.LeakBySocket(t, f.pod)
	if err := f.del(f.podPath, "0.3.1", prevOrNil(nil)); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.mustExist(f.hostVeth.Name, f.hostVeth.Index)
	mustRemovedFile(t, path)
}

func TestConfigErrorsAreCode7NamingTheField(t *testing.T) {
	f := newFixture(t)
	prev := f.prevResult()
	cases := map[string]map[string]any{
		"logLevel": {"logLevel": "loud"},
		"stateDir": {"stateDir": "relative/dir"},
		"logFile":  {"logFile": "log.txt"},
	}
	for field, extra := range cases {
		_, err := f.tryAdd(f.args(f.podPath, f.conf("1.0.0", prev, extra)))
		assertCNIError(t, err, types.ErrInvalidNetworkConfig, field)
	}
	_, err := f.tryAdd(f.args(f.podPath, f.conf("1.0.0", nil, nil)))
	assertCNIError(t, err, types.ErrInvalidNetworkConfig, "prevResult")
}

// Another invocation holding the attachment's lock makes DEL report "try
// again later" (11) instead of racing it.
func TestLockTimeoutIsTryAgainLater(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	st, err := store.Open(f.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := st.Lock(f.key(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f.plugin.LockTimeout = 50 * time.Millisecond
	err = f.del(f.podPath, "1.0.0", f.prevResult())
	assertCNIError(t, err, types.ErrTryAgainLater, "another invocation")
	l.Release(false)
	if f.loadRecord() == nil {
		t.Fatal("record must survive a deferred DEL")
	}
}

func assertCNIError(t *testing.T, err error, code uint, mentions string) {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("want CNI error %d mentioning %q, got %v", code, mentions, err)
	}
	if e.Code != code || !strings.Contains(e.Msg, mentions) {
		t.Fatalf("want CNI error %d mentioning %q, got %d %q", code, mentions, e.Code, e.Msg)
	}
}

func recordFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func assertStateDirEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("state dir should be empty, has %s", e.Name())
	}
}

// A config edited since ADD (here an invalid logLevel) or a prevResult DEL
// cannot parse never makes DEL fail: it still reaps from its record.
func TestDelSurvivesBadConfigAndPrevResult(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	nsutil.LeakBySocket(t, f.pod)
	conf := f.conf("1.0.0", nil, map[string]any{
		"logLevel":   "chatty",
		"prevResult": map[string]any{"cniVersion": "1.0.0", "ips": []map[string]any{{"address": "not-an-ip"}}},
	})
	a := f.args(f.podPath, conf)
	err := f.node.Do(func(ns.NetNS) error {
		return testutils.CmdDelWithArgs(a, func() error { return f.plugin.Del(a) })
	})
	if err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.mustBeGone(f.hostVeth.Name)
	if f.loadRecord() != nil {
		t.Fatal("record should be forgotten")
	}
}
