package bundle

import (
	"fmt"
	"path"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Annotation lets an operator keep a container's gssproxy config as is.
const (
	Annotation     = "leakguard.io/gssproxy"
	AnnotationKeep = "keep"
)

// Privileged applies the rule runtimes follow for --privileged: CAP_SYS_ADMIN
// in the bounding set and neither masked nor read-only paths.
func (c *Container) Privileged() bool {
	p := c.Spec.Process
	if p == nil || p.Capabilities == nil || !slices.Contains(p.Capabilities.Bounding, "CAP_SYS_ADMIN") {
		return false
	}
	l := c.Spec.Linux
	return l == nil || (len(l.MaskedPaths) == 0 && len(l.ReadonlyPaths) == 0)
}

// OptedOut reports the operator annotation asking to keep gssproxy's config.
func (c *Container) OptedOut() bool {
	return c.Spec.Annotations[Annotation] == AnnotationKeep
}

// HostNetwork reports whether the container shares the runtime's network
// namespace: no network namespace entry, or one whose path is the netns the
// hook itself runs in. A path that cannot be checked counts as not the host,
// so the container is still protected.
func (c *Container) HostNetwork() bool {
	if c.Spec.Linux == nil {
		return true
	}
	for _, ns := range c.Spec.Linux.Namespaces {
		if ns.Type != specs.NetworkNamespace {
			continue
		}
		if ns.Path == "" {
			return false
		}
		same, err := sameFile(ns.Path, "/proc/self/ns/net")
		return err == nil && same
	}
	return true
}

func sameFile(a, b string) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		return false, fmt.Errorf("failed to stat %q: %w", a, err)
	}
	if err := unix.Stat(b, &sb); err != nil {
		return false, fmt.Errorf("failed to stat %q: %w", b, err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

// MountPoint is one entry of config.json mounts as the hook needs it.
type MountPoint struct {
	// Destination is the path in the container, made absolute and clean.
	// It is where the runtime mounts only if no symlink in the image
	// redirects it: resolve it in the rootfs (inroot.Root.Resolve).
	Destination string
	// Bind is set for bind mounts (type bind or rbind, or option bind or
	// rbind): their content comes from the host.
	Bind bool
}

// MountPoints lists config.json mounts in order, the order the runtime
// mounts them in.
func (c *Container) MountPoints() []MountPoint {
	out := make([]MountPoint, 0, len(c.Spec.Mounts))
	for _, m := range c.Spec.Mounts {
		out = append(out, MountPoint{Destination: path.Clean("/" + m.Destination), Bind: isBind(m)})
	}
	return out
}

// BindMountsOver lists the destinations of bind mounts that cover dir (an
// absolute path in the container) or anything below it: a mount on dir, on
// one of its parents, or on a file or directory inside it. This compares
// paths as written; an in-image symlink can make a destination land
// elsewhere, so the hook resolves MountPoints in the rootfs instead.
func (c *Container) BindMountsOver(dir string) []string {
	dir = path.Clean("/" + dir)
	var out []string
	for _, m := range c.Spec.Mounts {
		if !isBind(m) {
			continue
		}
		d := path.Clean("/" + m.Destination)
		if d == dir || d == "/" || strings.HasPrefix(dir, d+"/") || strings.HasPrefix(d, dir+"/") {
			out = append(out, m.Destination)
		}
	}
	return out
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" || m.Type == "rbind" {
		return true
	}
	return slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}
