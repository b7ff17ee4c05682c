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

func readSpec(path string) (*specs.Spec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open bundle config: %w", err)
	}
	defer f.Close()
	var spec specs.Spec
	if err := json.NewDecoder(f).Decode(&spec); err != nil {
		return nil, fmt.Errorf("failed to parse bundle config %q: %w", path, err)
	}
	return &spec, nil
}
