// Package k8s holds the end-to-end tests on a real single-node Kubernetes
// cluster (test/kube): the DaemonSet of conf/kubernetes installed from the
// image `make image` builds, leakguard in the node's CNI chain, the leak and
// its reaping, the installer against a primary CNI agent, upgrade and
// uninstall. One cluster for the package (TestCluster's subtests, in order,
// each leaving a known state).
package k8s

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leakguard/leakguard/test/cnitest"
	"github.com/leakguard/leakguard/test/kube"
)

var (
	testTools kube.Tools
	testImage image
	repoRoot  string
)

// image is `make image`'s output.
type image struct {
	Archive string // bin/leakguard-image.tar
	Ref     string // bin/leakguard-image.ref's line
}

// Repository and Tag split Ref (a tag reference: the manifests name the
// repository, the overlay sets the tag).
func (i image) Repository() string { r, _ := splitRef(i.Ref); return r }
func (i image) Tag() string        { _, tag := splitRef(i.Ref); return tag }

func splitRef(ref string) (string, string) {
	i := strings.LastIndexByte(ref, ':')
	if i < 0 || strings.Contains(ref[i:], "/") {
		return ref, "latest"
	}
	return ref[:i], ref[i+1:]
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "test/k8s: %v\n", err)
		return 1
	}
	if os.Geteuid() != 0 {
		return fail(errors.New("must run as root (it starts a Kubernetes node); run `sudo make e2e-k8s`"))
	}
	var err error
	if repoRoot, err = cnitest.RepoRoot(); err != nil {
		return fail(err)
	}
	scratch, err := os.MkdirTemp("", "leakguard-k8s-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(scratch)
	if testTools, err = kube.FindTools(scratch); err != nil {
		return fail(err)
	}
	if testImage, err = findImage(); err != nil {
		return fail(err)
	}
	return m.Run()
}

// findImage reads `make image`'s output from $LEAKGUARD_BIN_DIR (make sets
// it) or <repo>/bin.
func findImage() (image, error) {
	dir := os.Getenv("LEAKGUARD_BIN_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot, "bin")
	}
	img := image{Archive: filepath.Join(dir, "leakguard-image.tar")}
	raw, err := os.ReadFile(filepath.Join(dir, "leakguard-image.ref"))
	if err == nil {
		_, err = os.Stat(img.Archive)
	}
	if err != nil {
		return image{}, fmt.Errorf("the leakguard image is missing (run `make image`): %w", err)
	}
	img.Ref = strings.TrimSpace(string(raw))
	if img.Ref == "" || strings.ContainsAny(img.Ref, " \n") {
		return image{}, fmt.Errorf("%s: %q is not one image reference", filepath.Join(dir, "leakguard-image.ref"), img.Ref)
	}
	return img, nil
}
