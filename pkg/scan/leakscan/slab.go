package leakscan

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/leakguard/leakguard/pkg/netns/nsreach"
)

// initNetIno is the fixed nsfs inode of init_net on kernels that give the
// initial namespaces fixed inodes (NET_NS_INIT_INO, 6.18+). init_net is
// static: it is not a slab object.
const initNetIno = 0xEFFFFFF9

// SlabEstimate estimates leaked namespaces from the net_namespace slab cache:
// every netns but init_net is one object, whether or not a host link points
// into it.
type SlabEstimate struct {
	// Available is false when slabinfo cannot be read or does not list
	// net_namespace (Reason says why).
	Available bool `json:"available"`
	// ActiveObjects is net_namespace's active_objs.
	ActiveObjects int `json:"activeObjects"`
	// ReachableObjects is how many reachable namespaces are slab objects
	// (the reachable ones minus init_net when it is among them).
	ReachableObjects int `json:"reachableObjects"`
	// Leaked is ActiveObjects - ReachableObjects, at least 0: an upper
	// bound, since SLUB counts every object of a per-CPU slab as active.
	Leaked int `json:"leakedEstimate"`
	// CPUSlabObjects is the capacity of net_namespace's per-CPU slabs
	// (cpu_slabs x objperslab from /sys/kernel/slab), 0 when unknown.
	CPUSlabObjects int `json:"cpuSlabObjects"`
	// LeakedLowerBound is Leaked - CPUSlabObjects, at least 0: objects on
	// node slabs are counted exactly, only per-CPU ones are uncertain.
	LeakedLowerBound int `json:"leakedLowerBound"`
	// Reason explains an unavailable estimate, or what limits its accuracy.
	Reason string `json:"reason,omitempty"`
}

const slabCaveat = "upper bound: active_objs counts free objects of per-CPU slabs and namespaces still being torn down"

func estimateSlab(path string, reach nsreach.Set) SlabEstimate {
	b, err := os.ReadFile(path)
	if err != nil {
		return SlabEstimate{Reason: fmt.Sprintf("cannot read %s: %v", path, err)}
	}
	active, perSlab, ok, err := parseSlabinfo(b, "net_namespace")
	if err != nil {
		return SlabEstimate{Reason: fmt.Sprintf("parse %s: %v", path, err)}
	}
	if !ok {
		return SlabEstimate{Reason: fmt.Sprintf("%s does not list net_namespace: slab merging folded it into another cache (boot with slab_nomerge to count it)", path)}
	}
	e := SlabEstimate{Available: true, ActiveObjects: active, ReachableObjects: len(reach), Reason: slabCaveat}
	for id := range reach {
		if id.Ino == initNetIno {
			e.ReachableObjects--
			break
		}
	}
	if n := sysfsInt("aliases"); n > 0 {
		e.Reason = fmt.Sprintf("%s; %d other caches share net_namespace's slab", slabCaveat, n)
	}
	e.Leaked = max(e.ActiveObjects-e.ReachableObjects, 0)
	e.CPUSlabObjects = sysfsInt("cpu_slabs") * perSlab
	e.LeakedLowerBound = max(e.Leaked-e.CPUSlabObjects, 0)
	return e
}

// parseSlabinfo returns the active_objs and objperslab of cache name in
// slabinfo 2.x text ("name active_objs num_objs objsize objperslab ..."), and
// whether the cache was found.
func parseSlabinfo(b []byte, name string) (int, int, bool, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[0] != name {
			continue
		}
		active, err := strconv.Atoi(f[1])
		if err != nil {
			return 0, 0, false, fmt.Errorf("active_objs of %s: %w", name, err)
		}
		perSlab, err := strconv.Atoi(f[4])
		if err != nil {
			return 0, 0, false, fmt.Errorf("objperslab of %s: %w", name, err)
		}
		return active, perSlab, true, nil
	}
	return 0, 0, false, sc.Err()
}

// sysfsInt reads the leading number of a SLUB sysfs attribute of
// net_namespace (e.g. "5 N0=5"), 0 when unavailable.
func sysfsInt(attr string) int {
	b, err := os.ReadFile(filepath.Join("/sys/kernel/slab/net_namespace", attr))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}
