// Package bundle reads what an OCI runtime hands a hook: the state JSON on
// stdin and the bundle's config.json, and answers the questions the hook
// asks of them (privileged? host network? opted out? what is mounted where?).
package bundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Container is one container as described by its state and bundle.
type Container struct {
	ID     string
	Bundle string
	// Rootfs is the host path of the root filesystem, root.path resolved
	// against the bundle when relative.
	Rootfs string
	Spec   *specs.Spec
}

// maxState bounds what is read from stdin; real states are a few KiB.
const maxState = 1 << 20

// ReadState parses the state JSON a runtime writes to a hook's stdin.
func ReadState(r io.Reader) (*specs.State, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxState))
	if err != nil {
		return nil, fmt.Errorf("failed to read OCI state from stdin: %w", err)
	}
	var st specs.State
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("failed to parse OCI state from stdin: %w", err)
	}
	if st.Bundle == "" {
		return &st, errors.New("OCI state on stdin has no bundle")
	}
	return &st, nil
}

// Load reads the bundle a state names.
func Load(st *specs.State) (*Container, error) {
	spec, err := readSpec(filepath.Join(st.Bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return nil, fmt.Errorf("config.json in bundle %q has no root.path", st.Bundle)
	}
	rootfs := spec.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(st.Bundle, rootfs)
	}
	return &Container{ID: st.ID, Bundle: st.Bundle, Rootfs: rootfs, Spec: spec}, nil
}

// MaxSpec bounds config.json. A Kubernetes container's spec comes from a
// pod object etcd caps at 1.5 MiB, plus the runtime's defaults (a seccomp
// profile is tens of KiB); 16 MiB is ten times that and still parses in
// well under a second.
const MaxSpec = 16 << 20

// ErrSpecFile is returned for a config.json that is not a regular file of
// at most MaxSpec bytes.
var ErrSpecFile = errors.New("bundle config is not a regular file of at most 16 MiB")

// readSpec reads config.json without following a symlink or blocking on a
// FIFO (the runtime writes a regular file; anything else is refused).
func readSpec(path string) (*specs.Spec, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			err = fmt.Errorf("%w: a symlink", ErrSpecFile)
		}
		return nil, fmt.Errorf("failed to open bundle config %q: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("failed to stat bundle config %q: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size > MaxSpec {
		return nil, fmt.Errorf("failed to read bundle config %q: %w (mode %#o, %d bytes)", path, ErrSpecFile, st.Mode&unix.S_IFMT, st.Size)
	}
	raw, err := io.ReadAll(io.LimitReader(f, MaxSpec+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read bundle config %q: %w", path, err)
	}
	if len(raw) > MaxSpec {
		return nil, fmt.Errorf("failed to read bundle config %q: %w (grew past the limit)", path, ErrSpecFile)
	}
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("failed to parse bundle config %q: %w", path, err)
	}
	return &spec, nil
}
