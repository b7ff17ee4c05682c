package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/podroute"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
)

// hugeSize is a record size no leakguard ever writes (the reported attack:
// a 1 GB sparse record took 1.05 GB of RSS and 2.7 s to read).
const hugeSize = 1 << 30

// allocated returns the bytes fn allocated on the heap.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func sparse(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// A record or tombstone over the cap is discarded as too-large without being
// read: Load, the walk and the sweep allocate next to nothing and return at
// once, and the file is moved aside whole (a read-only store leaves it).
func TestOversizedStateFileIsNeverRead(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	for _, c := range []struct {
		reader string
		path   string
		read   func() []error
	}{
		{"Load", s.recordPath(k), func() []error { _, err := s.Load(k); return []error{err} }},
		{"read-only Entries", s.recordPath(k), func() []error { _, _, p := s.ReadOnly().Entries(); return p }},
		{"Entries", s.recordPath(k), func() []error { _, _, p := s.Entries(); return p }},
		{"Entries (tombstone)", s.tombPath(k), func() []error { _, _, p := s.Entries(); return p }},
		{"SweepWindow", s.tombPath(k), func() []error { _, p := s.SweepWindow(0, 8, func(int) int { return 0 }); return p }},
	} {
		if _, err := os.Lstat(c.path); errors.Is(err, os.ErrNotExist) {
			sparse(t, c.path, hugeSize)
		}
		var problems []error
		start := time.Now()
		n := allocated(func() { problems = c.read() })
		took := time.Since(start)
		if len(problems) != 1 {
			t.Fatalf("%s: problems %v; want the huge file reported", c.reader, problems)
		}
		d := discardOf(t, c.reader, problems[0])
		if d.Kind != TooLarge || d.Path != c.path {
			t.Fatalf("%s: %v; want %s discarded as %s", c.reader, d, c.path, TooLarge)
		}
		if n > 1<<20 || took > time.Second {
			t.Fatalf("%s of a %d-byte file allocated %d bytes in %v: it was read", c.reader, hugeSize, n, took)
		}
		kept := c.path
		if !d.Kept {
			kept = d.MovedTo
		}
		if fi, err := os.Stat(kept); err != nil || fi.Size() != hugeSize {
			t.Fatalf("%s: the huge file should be kept whole at %s: %v %v", c.reader, kept, fi, err)
		}
	}
}

// The cap leaves room: a record far bigger than any pod's (64 interfaces
// and host links, 64 IPv6 addresses, 512 rules and routes, a 64 KiB
// delegate config, the longest names) is well under it, and Save refuses a record over it rather than
// writing one that no reader would use.
func TestStateFileCapLeavesRoom(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 253)
	r := &record.Record{
		Key:       record.Key{Network: long, ContainerID: strings.Repeat("c", 64), IfName: "eth0"},
		Created:   time.Now(),
		Updated:   time.Now(),
		Netns:     nsident.Identity{Dev: 4, Ino: 4026532000},
		NetnsPath: "/var/run/netns/cni-" + long,
		Pin:       &nspin.Pin{Path: "/run/leakguard/netns/" + long, Netns: nsident.Identity{Dev: 4, Ino: 4026532000}},
		// A main plugin's config (wrapper mode) is a few KiB; 64 KiB here.
		Delegate: json.RawMessage(`{"type":"bridge","pad":"` + strings.Repeat("p", 64<<10) + `"}`),
	}
	for i := 0; i < 64; i++ {
		name := fmt.Sprintf("veth%011d", i) // IFNAMSIZ - 1
		r.HostLinks = append(r.HostLinks, podlink.Identity{Name: name, Index: 1 << 30, MAC: "02:42:ac:11:00:02", Kind: "veth", NetNSID: 1 << 20, PeerIndex: 1 << 30, PeerName: name})
		r.Interfaces = append(r.Interfaces, podlink.ContainerIface{Name: name, Index: 1 << 30, MAC: "02:42:ac:11:00:02", Kind: "veth", Moved: true, HostName: name})
		ip := fmt.Sprintf("fd00:1234:5678:9abc:def0:1234:5678:%04x", i)
		r.IPs = append(r.IPs, ip+"/128")
		for j := 0; j < 8; j++ {
			r.Routing.Rules = append(r.Routing.Rules, podroute.Rule{PodIP: ip, Family: 10, Priority: 32765, Table: 1 << 20, Src: ip + "/128", Dst: ip + "/128", IifName: name, OifName: name, Mark: 1 << 31, Mask: 1 << 31})
			r.Routing.Routes = append(r.Routing.Routes, podroute.Route{PodIP: ip, Family: 10, Table: 1 << 20, Dst: ip + "/128", LinkIndex: 1 << 30, LinkName: name, Gw: ip, Src: ip, Scope: 253, Protocol: 4, Priority: 1 << 20})
		}
	}
	b, err := encode(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a record of 64 links, 64 IPs, 1024 rules and routes, a 64 KiB delegate: %d bytes (cap %d)", len(b), maxStateFile)
	if len(b) > maxStateFile/2 {
		t.Fatalf("%d bytes: the cap of %d leaves too little room", len(b), maxStateFile)
	}
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(r.Key); err != nil || got == nil {
		t.Fatalf("Load of a big record = %v, %v", got, err)
	}
	for len(b) <= maxStateFile {
		r.IPs = append(r.IPs, r.IPs...)
		if b, err = encode(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Save(r); err == nil || !strings.Contains(err.Error(), "cap") {
		t.Fatalf("Save of a %d-byte record = %v; want a refusal naming the cap", len(b), err)
	}
	if got, err := s.Load(r.Key); err != nil || got == nil || len(got.IPs) != 64 {
		t.Fatalf("a refused Save must leave the previous record: %v, %v", got, err)
	}
}
