package guard_test

import (
	"testing"
)

// A DEL repeated after a successful DEL (no record any more) may come with a
// reused /proc/<pid>/ns/net: the pid now belongs to a host process or to
// another pod. The wrapper must not hand such a path to the main plugin, whose
// DEL would delete CNI_IFNAME in it (bridge and ptp do, before skel's own
// netns check runs): the host's link of that name, or the other pod's eth0.
func TestWrapperRepeatedDelNeverHandsAReusedNetns(t *testing.T) {
	t.Run("the host netns", func(t *testing.T) {
		f := newFixture(t)
		dir := f.wrapper(t)
		if _, err := f.wrapAdd("1.0.0", nil); err != nil {
			t.Fatal(err)
		}
		if err := f.wrapDel(f.podPath, "1.0.0"); err != nil {
			t.Fatal(err)
		}
		// The retry: the pod's pid is now a process of the node.
		// plugins/leakguard lifts skel's own-netns check for DEL.
		t.Setenv("CNI_NETNS_OVERRIDE", "1")
		if err := f.wrapDel(f.node.Path(), "1.0.0"); err != nil {
			t.Fatal(err)
		}
		if c := lastCall(t, dir, "DEL"); c.Netns != "" {
			t.Errorf("repeated DEL: delegate got the plugin's own (host) netns %q, want none", c.Netns)
		}
	})
	t.Run("another pod's netns", func(t *testing.T) {
		f := newFixture(t)
		dir := f.wrapper(t)
		g := f.sibling()
		if _, err := g.wrapAdd("1.0.0", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := f.wrapAdd("1.0.0", nil); err != nil {
			t.Fatal(err)
		}
		if err := f.wrapDel(f.podPath, "1.0.0"); err != nil {
			t.Fatal(err)
		}
		// The retry: the pod's pid now belongs to the other pod.
		if err := f.wrapDel(g.podPath, "1.0.0"); err != nil {
			t.Fatal(err)
		}
		if c := lastCall(t, dir, "DEL"); c.Netns != "" {
			t.Errorf("repeated DEL: delegate got another pod's recorded netns %q, want none", c.Netns)
		}
	})
}
