// Command gcbench measures leakguard's CNI GC over many records: it fills a
// temporary state dir with N records (host links and netns that no longer
// exist, as after a crash), then execs the real plugin with CNI_COMMAND=GC
// as a runtime would, and prints wall time and the plugin's peak RSS.
// Run it inside a throw-away netns (scripts/bench-gc.sh does).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

func main() {
	plugin := flag.String("leakguard", "bin/leakguard", "leakguard plugin binary")
	n := flag.Int("records", 5000, "records in the state dir")
	runs := flag.Int("runs", 5, "runs per case")
	flag.Parse()
	if err := run(*plugin, *n, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "gcbench:", err)
		os.Exit(1)
	}
}

func run(plugin string, n, runs int) error {
	// State on tmpfs, as /run is on a node (ip netns exec gave us a private
	// mount namespace: the mount goes away with us).
	work, err := os.MkdirTemp("", "gcbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := syscall.Mount("tmpfs", work, "tmpfs", 0, "size=256m"); err != nil {
		return fmt.Errorf("mount tmpfs for the state dirs: %w", err)
	}
	defer syscall.Unmount(work, syscall.MNT_DETACH)
	fmt.Printf("GC over %d records (plugin exec'd with CNI_COMMAND=GC, cniVersion 1.1.0), %d runs per case\n", n, runs)
	fmt.Printf("  %-44s %10s %10s %10s\n", "case", "median", "max", "peak RSS")
	var valid []types.GCAttachment
	for i := 0; i < n; i++ {
		valid = append(valid, types.GCAttachment{ContainerID: cid(i), IfName: "eth0"})
	}
	cases := []struct {
		name  string
		extra map[string]any
		left  int
	}{
		{"all valid (nothing stale: the walk alone)", map[string]any{"cni.dev/valid-attachments": valid}, n},
		{"empty list (all stale, links already gone)", map[string]any{"cni.dev/valid-attachments": []any{}}, 0},
		{"no list (reachability walk, all orphaned)", nil, 0},
	}
	for _, c := range cases {
		var walls []time.Duration
		var rss int64
		for r := 0; r < runs; r++ {
			dir, err := os.MkdirTemp(work, "state-")
			if err != nil {
				return err
			}
			if err := fill(dir, n); err != nil {
				return err
			}
			wall, maxrss, err := gc(plugin, dir, c.extra)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			left, _ := filepath.Glob(filepath.Join(dir, "*.json"))
			os.RemoveAll(dir)
			if len(left) != c.left {
				return fmt.Errorf("%s: %d records left, want %d", c.name, len(left), c.left)
			}
			walls = append(walls, wall)
			rss = max(rss, maxrss)
		}
		sort.Slice(walls, func(i, j int) bool { return walls[i] < walls[j] })
		verdict := "PASS"
		if walls[len(walls)/2] > time.Second {
			verdict = "MISS"
		}
		fmt.Printf("  %-44s %9.3fs %9.3fs %8.1fMiB  target < 1s: %s\n", c.name,
			walls[len(walls)/2].Seconds(), walls[len(walls)-1].Seconds(), float64(rss)/1024, verdict)
	}
	return nil
}

func cid(i int) string { return fmt.Sprintf("gcbench-%06d", i) }

// fill writes n records of attachments whose netns and links are gone.
func fill(dir string, n int) error {
	st, err := store.Open(dir)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	for i := 0; i < n; i++ {
		r := &record.Record{
			Key:     record.Key{Network: "gcbench", ContainerID: cid(i), IfName: "eth0"},
			Created: now, Updated: now,
			Netns:     nsident.Identity{Dev: 4, Ino: uint64(1<<40 + i)},
			NetnsPath: "/run/netns/gcbench-" + cid(i),
			HostLinks: []podlink.Identity{{Name: fmt.Sprintf("veth%08x", i), Index: 1<<30 + i, MAC: "02:00:00:00:00:01", Kind: "veth", NetNSID: i, PeerIndex: 2, PeerName: "eth0"}},
			IPs:       []string{fmt.Sprintf("10.%d.%d.%d/16", 100+i>>16, i>>8&255, i&255)},
		}
		if err := st.Save(r); err != nil {
			return err
		}
	}
	return nil
}

func gc(plugin, stateDir string, extra map[string]any) (time.Duration, int64, error) {
	conf := map[string]any{"cniVersion": "1.1.0", "name": "gcbench", "type": "leakguard", "stateDir": stateDir}
	for k, v := range extra {
		conf[k] = v
	}
	b, err := json.Marshal(conf)
	if err != nil {
		return 0, 0, err
	}
	var out bytes.Buffer
	cmd := exec.Command(plugin)
	cmd.Env = []string{"CNI_COMMAND=GC", "CNI_PATH=/nonexistent"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(b), &out, &out
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("GC: %v: %s", err, out.String())
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	var rss int64
	if ru != nil {
		rss = ru.Maxrss
	}
	return wall, rss, nil
}
