package stress

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
)

// linkID is what identifies a node link for "still there" and "left alone".
type linkID struct {
	Index           int
	Name, MAC, Kind string
}

func (l linkID) String() string {
	return fmt.Sprintf("%s(ifindex %d, %s, %s)", l.Name, l.Index, l.Kind, l.MAC)
}

func idOf(l netlink.Link) linkID {
	a := l.Attrs()
	return linkID{a.Index, a.Name, a.HardwareAddr.String(), l.Type()}
}

func (n *node) links() map[int]linkID {
	n.t.Helper()
	links, err := n.h.LinkList()
	if err != nil {
		n.t.Fatalf("list node links: %v", err)
	}
	out := make(map[int]linkID, len(links))
	for _, l := range links {
		out[l.Attrs().Index] = idOf(l)
	}
	return out
}

func (n *node) present(id linkID) bool { return n.links()[id.Index] == id }

// wrongDeletions lists the node links of before that are gone or changed
// although they are not in pods' host veths, and links that appeared.
func (n *node) wrongDeletions(before map[int]linkID, pods []*pod) []string {
	pod := map[int]bool{}
	for _, p := range pods {
		pod[p.host.Index] = true
	}
	after := n.links()
	var out []string
	for idx, id := range before {
		got, ok := after[idx]
		switch {
		case pod[idx]:
		case !ok:
			out = append(out, fmt.Sprintf("node link %s deleted, but it is no pod's", id))
		case got != id:
			out = append(out, fmt.Sprintf("node link %s changed to %s", id, got))
		}
	}
	for idx, id := range after {
		if _, ok := before[idx]; !ok {
			out = append(out, fmt.Sprintf("new node link %s", id))
		}
	}
	return out
}

// What can be left behind, by kind. Everything but tombstones is a DEL's
// to remove; tombstones are GC's.
const (
	hostVeth  = "host veths" // host veths of the pods still there
	recordF   = "records"    // live record files
	corruptF  = "corrupt"    // records or tombstones moved aside as corrupt
	lockF     = "locks"      // lock files
	tempF     = "temp files" // temp files of writers
	pinMount  = "pin mounts" // mounts below the pin dir
	pinFile   = "pin files"  // files in the pin dir (mounted or not)
	ipAddr    = "IPs"        // addresses host-local still holds
	otherF    = "other"      // anything else in the state dir
	tombstone = "tombstones" // tombstones
)

var kinds = []string{hostVeth, recordF, corruptF, lockF, tempF, pinMount, pinFile, ipAddr, otherF, tombstone}

// leftovers lists what the pods and leakguard left on the node, by kind.
type leftovers map[string][]string

func (l leftovers) note(kind, format string, a ...any) {
	l[kind] = append(l[kind], fmt.Sprintf(format, a...))
}

// total counts everything a DEL must have removed (not tombstones).
func (l leftovers) total() int {
	n := 0
	for k, items := range l {
		if k != tombstone {
			n += len(items)
		}
	}
	return n
}

// add adds o's counts and items to l.
func (l leftovers) add(o leftovers) {
	for k, items := range o {
		l[k] = append(l[k], items...)
	}
}

// minus is l without the items already in base: what appeared since.
func (l leftovers) minus(base leftovers) leftovers {
	out := leftovers{}
	for k, items := range l {
		for _, it := range items {
			if !slices.Contains(base[k], it) {
				out[k] = append(out[k], it)
			}
		}
	}
	return out
}

func (l leftovers) String() string {
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s %d", k, len(l[k]))
	}
	return strings.Join(parts, ", ")
}

// items lists every item, for failure messages.
func (l leftovers) items() []string {
	var out []string
	for _, k := range kinds {
		out = append(out, l[k]...)
	}
	return out
}

// leftovers inspects the node: the pods' host veths, the state dir, the
// mounts below the pin dir and host-local's allocations.
func (n *node) leftovers(pods []*pod) leftovers {
	n.t.Helper()
	l := leftovers{}
	links := n.links()
	for _, p := range pods {
		if p.host.Index != 0 && links[p.host.Index] == p.host {
			l.note(hostVeth, "host veth %s of pod %d", p.host, p.i)
		}
	}
	n.walkState(l)
	n.pinMounts(l)
	ents, err := os.ReadDir(filepath.Join(n.ipamDir, n.network))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		n.t.Fatalf("read host-local data dir: %v", err)
	}
	for _, e := range ents {
		if net.ParseIP(e.Name()) != nil {
			l.note(ipAddr, "address %s still allocated", e.Name())
		}
	}
	return l
}

func (n *node) walkState(l leftovers) {
	n.t.Helper()
	read := func(dir string) []os.DirEntry {
		ents, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			n.t.Fatalf("read %s: %v", dir, err)
		}
		return ents
	}
	for _, e := range read(n.stateDir) {
		name := e.Name()
		switch {
		case name == "tombstones" && e.IsDir():
			for _, t := range read(filepath.Join(n.stateDir, name)) {
				switch tn := t.Name(); {
				case strings.Contains(tn, ".corrupt-"):
					l.note(corruptF, "tombstones/%s", tn)
				case strings.HasPrefix(tn, ".tmp-"):
					l.note(tempF, "tombstones/%s", tn)
				case strings.HasSuffix(tn, ".tomb"):
					l.note(tombstone, "tombstones/%s", tn)
				default:
					l.note(otherF, "tombstones/%s", tn)
				}
			}
		case filepath.Join(n.stateDir, name) == n.pinDir && e.IsDir():
			for _, p := range read(n.pinDir) {
				l.note(pinFile, "pin dir entry %s", p.Name())
			}
		case strings.Contains(name, ".corrupt-"):
			l.note(corruptF, "%s", name)
		case strings.HasPrefix(name, ".tmp-"):
			l.note(tempF, "%s", name)
		case strings.HasSuffix(name, ".json"):
			l.note(recordF, "%s", name)
		case strings.HasSuffix(name, ".lock"):
			l.note(lockF, "%s", name)
		default:
			l.note(otherF, "%s", name)
		}
	}
}

// pinMounts counts the mounts below the pin dir (the pin dir's own bind
// mount is not a pin) and any other mount inside the state dir.
func (n *node) pinMounts(l leftovers) {
	n.t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		n.t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	pinDirMounts := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mnt := unescapeMountinfo(fields[4])
		switch {
		case mnt == n.pinDir:
			pinDirMounts++
		case strings.HasPrefix(mnt, n.pinDir+"/"):
			l.note(pinMount, "pin mount %s", mnt)
		case strings.HasPrefix(mnt, n.stateDir+"/"):
			l.note(otherF, "mount %s", mnt)
		}
	}
	if err := sc.Err(); err != nil {
		n.t.Fatalf("read mountinfo: %v", err)
	}
	if pinDirMounts > 1 { // one bind of the pin dir onto itself, never stacked
		l.note(otherF, "pin dir %s mounted %d times", n.pinDir, pinDirMounts)
	}
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
