// Package podroute records and removes the host routing state that points at
// a pod's IPs: ip rules whose selector is exactly a pod IP (as source or
// destination) and routes to a pod IP in any table, as tke-eni-cni-style
// plugins create them. Each object is removed only if it still exists
// unchanged.
package podroute

// Rule is one recorded ip rule. Src and Dst are CIDRs ("" when unset); one of
// them is a pod IP as a host prefix (/32 or /128).
type Rule struct {
	Family   int    `json:"family"`
	Priority int    `json:"priority"`
	Table    int    `json:"table"`
	Src      string `json:"src,omitempty"`
	Dst      string `json:"dst,omitempty"`
	IifName  string `json:"iif,omitempty"`
	OifName  string `json:"oif,omitempty"`
	Mark     uint32 `json:"mark,omitempty"`
	Invert   bool   `json:"invert,omitempty"`
}

// Route is one recorded route to a pod IP.
type Route struct {
	Family    int    `json:"family"`
	Table     int    `json:"table"`
	Dst       string `json:"dst"`
	LinkIndex int    `json:"ifindex"`
	LinkName  string `json:"dev"`
	Gw        string `json:"gw,omitempty"`
	Src       string `json:"src,omitempty"`
	Scope     int    `json:"scope"`
	Protocol  int    `json:"protocol"`
	Priority  int    `json:"metric,omitempty"`
}

// State is the routing state of one attachment.
type State struct {
	Rules  []Rule  `json:"rules,omitempty"`
	Routes []Route `json:"routes,omitempty"`
}
