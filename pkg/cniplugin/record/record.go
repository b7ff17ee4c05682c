// Package record defines the attachment record: what leakguard learned about
// one attachment at ADD and needs at DEL when the netns may be gone.
package record

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/leakguard/leakguard/pkg/cniplugin/podlink"
	"github.com/leakguard/leakguard/pkg/cniplugin/podroute"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
)

// Schema is the version of the record format written by this build.
const Schema = 1

// Key names one attachment, as CNI does: network name, container ID, ifname.
type Key struct {
	Network     string `json:"network"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

func (k Key) String() string { return fmt.Sprintf("%s/%s/%s", k.Network, k.ContainerID, k.IfName) }

// Record is one attachment's state. Its kernel identities (ifindexes, netns
// inode, nsid) are only valid for the boot that wrote it.
type Record struct {
	Schema int `json:"schema"`
	Key
	BootID     string                   `json:"bootID"`
	Created    time.Time                `json:"created"`
	Updated    time.Time                `json:"updated"`
	Netns      nsident.Identity         `json:"netns"`
	NetnsPath  string                   `json:"netnsPath"`
	HostLinks  []podlink.Identity       `json:"hostLinks"`
	Interfaces []podlink.ContainerIface `json:"interfaces"`
	IPs        []string                 `json:"ips"`

	// Routing is the host routing state pointing at the pod IPs at ADD.
	Routing podroute.State `json:"routing,omitempty"`
	// Pin is the bind mount that keeps the netns reachable for rescue
	// (pinNetns), nil when not pinned.
	Pin *nspin.Pin `json:"pin,omitempty"`
	// Delegate is the main plugin's config as leakguard rendered it at ADD
	// (wrapper mode), replayed at DEL when DEL's own config lacks it.
	Delegate json.RawMessage `json:"delegate,omitempty"`
	// GSSProxyArmed is set once /proc/net/rpc/use-gss-proxy read 1 inside
	// the netns: the kernel will never free it.
	GSSProxyArmed bool `json:"gssProxyArmed,omitempty"`
	// TombstonedAt is set on a tombstone: what is left of a record after a
	// DEL that left the host side to the main plugin (netns alive then).
	TombstonedAt *time.Time `json:"tombstonedAt,omitempty"`
}

// Validate checks what every usable record must hold.
func (r *Record) Validate() error {
	switch {
	case r.Schema != Schema:
		return fmt.Errorf("schema %d, this build reads %d", r.Schema, Schema)
	case r.ContainerID == "" || r.IfName == "":
		return fmt.Errorf("container ID or ifname missing")
	case r.BootID == "":
		return fmt.Errorf("boot ID missing")
	case r.Netns.IsZero():
		return fmt.Errorf("netns identity missing")
	}
	return nil
}
