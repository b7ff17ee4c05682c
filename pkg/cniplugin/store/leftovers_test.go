package store

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
)

// Save finds the fixed temp path of its record taken by a killed writer's
// leftover (it holds the lock, so nobody else writes there): it replaces
// it. Something there that is not a regular file of ours makes Save fail,
// naming it, rather than being removed or followed.
func TestSaveOverAKilledWritersTemp(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	tmp := s.tempPath(baseName(k))
	if err := os.WriteFile(tmp, []byte(`{"schema":1,"netw`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := newRecord(k)
	r.IPs = []string{"10.0.0.1/32"}
	if err := s.Save(r); err != nil {
		t.Fatalf("Save over a leftover temp file: %v", err)
	}
	if got, err := s.Load(k); err != nil || got == nil || len(got.IPs) != 1 {
		t.Fatalf("Load = %+v, %v; want the saved record", got, err)
	}
	if _, err := os.Lstat(tmp); !os.IsNotExist(err) {
		t.Fatalf("temp file left after Save: %v", err)
	}
	if err := unix.Mkfifo(tmp, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(r); err == nil || !strings.Contains(err.Error(), tmp) || !strings.Contains(err.Error(), "fifo") {
		t.Fatalf("Save with a FIFO at its temp path = %v; want a refusal naming it", err)
	}
	if fi, err := os.Lstat(tmp); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("the FIFO must be left alone: %v %v", fi, err)
	}
}

// GC's leftover sweep removes lock files only under the lock: run against
// a stream of lockers of one attachment (ADD and DEL holding it, releasing
// it with or without removing the file), it never lets two of them hold the
// lock at once, and leaves nothing once they are done.
func TestLeftoverSweepNeverBreaksTheLock(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	var inside, most atomic.Int32
	stop := make(chan struct{})
	var sweeps sync.WaitGroup
	sweeps.Add(1)
	go func() {
		defer sweeps.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, errs := s.RemoveLeftovers(nil, time.Hour); len(errs) != 0 {
				t.Error(errs)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				l, err := s.Lock(k, 10*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				n := inside.Add(1)
				for m := most.Load(); n > m; m = most.Load() {
					if most.CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(50 * time.Microsecond)
				inside.Add(-1)
				l.Release((i+j)%3 == 0)
			}
		}(i)
	}
	wg.Wait()
	close(stop)
	sweeps.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d holders of one lock at once", most.Load())
	}
	if _, errs := s.RemoveLeftovers(nil, time.Hour); len(errs) != 0 {
		t.Fatal(errs)
	}
	if ents, _ := os.ReadDir(s.Dir()); len(ents) != 0 {
		t.Fatalf("leftovers after the sweep: %v", ents)
	}
}
