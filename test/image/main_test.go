// Package image tests `make image` (scripts/image): the archive's contents,
// byte for byte reproducibility, and that the real tools take it: `ctr
// images import` into a private containerd 2.x, whose CRI then runs the
// image, and `docker load` into a private dockerd (docker.io 20.10), which
// runs it too.
package image

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/leakguard/leakguard/test/cnitest"
	rt "github.com/leakguard/leakguard/test/runtime"
)

// testRef is the name the tests give the image; docker.io/ on purpose:
// go-containerregistry spells it index.docker.io, which must not leak out.
const testRef = "docker.io/leakguard-test/leakguard:t1"

// testCreated is the creation time the tests pass (seconds since the epoch).
const testCreated = 1700000000

var (
	root     string // the repository
	binDir   string // the four static binaries
	mkimage  string // scripts/image, built
	scratch  string
	imageTar string // built once by TestMain with testRef
	imageRef string // its .ref file
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	var err error
	if scratch, err = os.MkdirTemp("", "leakguard-image-"); err != nil {
		fmt.Fprintln(os.Stderr, "test/image:", err)
		return 1
	}
	defer os.RemoveAll(scratch)
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "test/image:", err)
		return 1
	}
	return m.Run()
}

// setup finds (or builds, static) the shipped binaries, builds the image
// tool and runs it once.
func setup() error {
	var err error
	if root, err = cnitest.RepoRoot(); err != nil {
		return err
	}
	binDir = os.Getenv("LEAKGUARD_BIN_DIR") // make test: make build's bin/
	if binDir == "" {
		binDir = filepath.Join(scratch, "bin")
		for _, b := range []string{"leakguardctl", "leakguard", "leakguard-hook", "leakguard-nri"} {
			if err := goBuild(filepath.Join(binDir, b), "./plugins/"+b, "CGO_ENABLED=0"); err != nil {
				return fmt.Errorf("LEAKGUARD_BIN_DIR unset and %w (run `make build`)", err)
			}
		}
	}
	mkimage = filepath.Join(scratch, "mkimage")
	if err := goBuild(mkimage, "./scripts/image"); err != nil {
		return err
	}
	imageTar, imageRef = filepath.Join(scratch, "image.tar"), filepath.Join(scratch, "image.ref")
	out, err := exec.Command(mkimage, imageArgs(binDir, imageTar, imageRef)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("scripts/image: %w\n%s", err, out)
	}
	return nil
}

func imageArgs(bin, out, ref string) []string {
	return []string{"--bin", bin, "--out", out, "--ref-out", ref, "--image", testRef,
		"--version", "v0.0.0-test", "--revision", "0123abcd", "--source", "https://example.com/leakguard",
		"--created", fmt.Sprint(testCreated)}
}

func goBuild(out, pkg string, env ...string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// runtimeTools finds containerd, crictl, dockerd... (building them once).
func runtimeTools(t *testing.T) rt.Tools {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("must run as root (it starts containerd and dockerd); run `sudo make test`")
	}
	tools, err := rt.FindTools(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return tools
}
