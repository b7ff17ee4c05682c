package kube

import (
	"slices"
	"testing"
	"time"
)

// teardown stops kubelet (so that nothing restarts pods), then the control
// plane in reverse start order. containerd's own teardown (registered
// before) then removes the pods through CRI (CNI DEL runs) and the instance
// dir; the host changes are undone last.
func (c *Cluster) teardown(t testing.TB) {
	if t.Failed() {
		for _, d := range c.daemons {
			t.Logf("%s log (last 40 lines):\n%s", d.Name(), d.Tail(40))
		}
	}
	if c.kubelet != nil {
		if err := c.kubelet.Stop(30 * time.Second); err != nil {
			t.Errorf("teardown: %v", err)
		}
	}
	for _, d := range slices.Backward(c.daemons) {
		if d == c.kubelet {
			continue
		}
		if err := d.Stop(20 * time.Second); err != nil {
			t.Errorf("teardown: %v", err)
		}
	}
}
