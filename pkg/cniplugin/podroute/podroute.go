// Package podroute records and removes the host routing state that points at
// a pod's IPs: ip rules whose selector is exactly a pod IP (as source or
// destination) and routes to a pod IP in any table, as tke-eni-cni-style
// plugins create them. Each object is removed only if it still exists
// unchanged.
package podroute

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Rule is one recorded ip rule: every attribute the kernel reports for it, so
// that "unchanged" means unchanged. Src and Dst are CIDRs ("" when unset); one
// of them is PodIP as a host prefix (/32 or /128).
type Rule struct {
	// PodIP is the pod address the rule was recorded for ("10.77.0.5").
	PodIP    string `json:"podIP"`
	Family   int    `json:"family"`
	Priority int    `json:"priority"`
	Table    int    `json:"table"`
	Src      string `json:"src,omitempty"`
	Dst      string `json:"dst,omitempty"`
	IifName  string `json:"iif,omitempty"`
	OifName  string `json:"oif,omitempty"`
	Mark     uint32 `json:"mark,omitempty"`
	Mask     uint32 `json:"mask,omitempty"`
	Invert   bool   `json:"invert,omitempty"`
	Tos      uint   `json:"tos,omitempty"`
	Goto     int    `json:"goto,omitempty"`
	Flow     int    `json:"flow,omitempty"`
	TunID    uint   `json:"tunID,omitempty"`
	IPProto  int    `json:"ipproto,omitempty"`
	Sport    string `json:"sport,omitempty"`    // "start-end"
	Dport    string `json:"dport,omitempty"`    // "start-end"
	UIDRange string `json:"uidrange,omitempty"` // "start-end"
	// SuppressPrefixlen and SuppressIfgroup are nil when unset (0 is a
	// meaningful suppress_prefixlength).
	SuppressPrefixlen *int  `json:"suppressPrefixlen,omitempty"`
	SuppressIfgroup   *int  `json:"suppressIfgroup,omitempty"`
	Protocol          uint8 `json:"protocol,omitempty"`
}

// Route is one recorded route to a pod IP (its host prefix), in any table.
// Multipath routes are never recorded.
type Route struct {
	// PodIP is the pod address the route was recorded for ("10.77.0.5").
	PodIP     string `json:"podIP"`
	Family    int    `json:"family"`
	Table     int    `json:"table"`
	Dst       string `json:"dst"`
	LinkIndex int    `json:"ifindex"`
	LinkName  string `json:"dev"`
	Gw        string `json:"gw,omitempty"`
	Src       string `json:"src,omitempty"` // preferred source
	Scope     int    `json:"scope"`
	Protocol  int    `json:"protocol"`
	Priority  int    `json:"metric,omitempty"`
	Type      int    `json:"type,omitempty"`
	Tos       int    `json:"tos,omitempty"`
}

// State is the routing state of one attachment.
type State struct {
	Rules  []Rule  `json:"rules,omitempty"`
	Routes []Route `json:"routes,omitempty"`
}

// Empty reports whether nothing was recorded.
func (s State) Empty() bool { return len(s.Rules) == 0 && len(s.Routes) == 0 }

// String renders the rule roughly like `ip rule`, for logs.
func (r Rule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rule %d:", r.Priority)
	if r.Invert {
		b.WriteString(" not")
	}
	if r.Src != "" {
		fmt.Fprintf(&b, " from %s", r.Src)
	}
	if r.Dst != "" {
		fmt.Fprintf(&b, " to %s", r.Dst)
	}
	if r.IifName != "" {
		fmt.Fprintf(&b, " iif %s", r.IifName)
	}
	if r.OifName != "" {
		fmt.Fprintf(&b, " oif %s", r.OifName)
	}
	if r.Mark != 0 || r.Mask != 0 {
		fmt.Fprintf(&b, " fwmark %#x/%#x", r.Mark, r.Mask)
	}
	if r.Goto > 0 {
		fmt.Fprintf(&b, " goto %d", r.Goto)
	} else {
		fmt.Fprintf(&b, " lookup %d", r.Table)
	}
	return b.String()
}

// String renders the route roughly like `ip route`, for logs.
func (r Route) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "route %s", r.Dst)
	if r.Gw != "" {
		fmt.Fprintf(&b, " via %s", r.Gw)
	}
	fmt.Fprintf(&b, " dev %s (ifindex %d) table %d", r.LinkName, r.LinkIndex, r.Table)
	if r.Priority != 0 {
		fmt.Fprintf(&b, " metric %d", r.Priority)
	}
	return b.String()
}

// MarshalJSON writes an empty State as {} without touching Rule and Route:
// the plugin runs once per CNI call, and building the JSON encoders of these
// wide types is a measurable share of an ADD when most pods have no rules.
func (s State) MarshalJSON() ([]byte, error) {
	if s.Empty() {
		return []byte("{}"), nil
	}
	type plain State
	return json.Marshal(plain(s))
}

// UnmarshalJSON mirrors MarshalJSON: {} and null decode without reflection
// on Rule and Route.
func (s *State) UnmarshalJSON(b []byte) error {
	switch string(bytes.TrimSpace(b)) {
	case "{}", "null":
		*s = State{}
		return nil
	}
	type plain State
	return json.Unmarshal(b, (*plain)(s))
}
