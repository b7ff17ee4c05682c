// Package cri proves leakguard on the runtimes Kubernetes nodes run, through
// CRI with crictl: containerd 2.x and cri-dockerd + Docker, each a private
// instance (test/runtime) on a private bridge network of the host netns.
package cri

import (
	"fmt"
	"os"
	"testing"

	rt "github.com/leakguard/leakguard/test/runtime"
)

var (
	tools  rt.Tools
	images rt.TestImages
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "test/cri: must run as root (it starts containerd and dockerd); run `sudo make test`")
		return 1
	}
	scratch, err := os.MkdirTemp("", "leakguard-cri-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/cri:", err)
		return 1
	}
	defer os.RemoveAll(scratch)
	if tools, err = rt.FindTools(scratch); err != nil {
		fmt.Fprintln(os.Stderr, "test/cri:", err)
		return 1
	}
	if images, err = rt.BuildTestImages(scratch, tools); err != nil {
		fmt.Fprintln(os.Stderr, "test/cri:", err)
		return 1
	}
	return m.Run()
}
