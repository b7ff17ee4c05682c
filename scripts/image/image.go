package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Binaries are the files of the image, all in /bin.
var Binaries = []string{"leakguardctl", "leakguard", "leakguard-hook", "leakguard-nri"}

// Entrypoint is the image's entrypoint; the DaemonSet sets command and args.
var Entrypoint = []string{"/bin/leakguardctl"}

// Label keys of the image config (OCI annotation names).
const (
	LabelVersion  = "org.opencontainers.image.version"
	LabelRevision = "org.opencontainers.image.revision"
	LabelSource   = "org.opencontainers.image.source"
)

// maxBinary caps a binary read into memory (ours are a few MiB).
const maxBinary = 256 << 20

func binaryList() string { return strings.Join(Binaries, ", ") }

// write builds the image and writes the archive and the reference file,
// each atomically (a temp file in the same dir, then rename).
func (o options) write() error {
	tag, err := parseRef(o.Name)
	if err != nil {
		return err
	}
	img, err := o.build()
	if err != nil {
		return err
	}
	if err := writeAtomic(o.Out, func(w io.Writer) error { return writeArchive(w, img, o.Name, tag, o.Created) }); err != nil {
		return fmt.Errorf("write %s: %w", o.Out, err)
	}
	ref := o.Name + "\n"
	if err := writeAtomic(o.RefOut, func(w io.Writer) error { _, err := io.WriteString(w, ref); return err }); err != nil {
		return fmt.Errorf("write %s: %w", o.RefOut, err)
	}
	return nil
}

// build is the image: one layer (/bin and the binaries, root-owned, 0755,
// at the creation time, sorted) on empty.Image with OCI media types, and a
// config for linux on the binaries' architecture.
func (o options) build() (v1.Image, error) {
	var files []layerFile
	arch := ""
	for _, b := range Binaries {
		p := filepath.Join(o.BinDir, b)
		data, err := readBinary(p)
		if err != nil {
			return nil, err
		}
		a, err := staticArch(p, data)
		if err != nil {
			return nil, err
		}
		if arch != "" && a != arch {
			return nil, fmt.Errorf("%s is built for %s, the others for %s", p, a, arch)
		}
		arch = a
		files = append(files, layerFile{Path: "bin/" + b, Data: data})
	}
	layerTar, err := makeLayer(files, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "make image", Comment: "leakguard binaries"},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: o.Created}
	cf.Config.Entrypoint = Entrypoint
	cf.Config.Env = []string{"PATH=/bin"}
	cf.Config.Labels = o.labels()
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}

// parseRef accepts a full reference with a registry host and a tag, as
// runtimes name images (containerd does not expand docker.io/ for itself).
func parseRef(ref string) (name.Tag, error) {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %q (give a full one, e.g. ghcr.io/leakguard/leakguard:v1): %w", ref, err)
	}
	host, _, _ := strings.Cut(ref, "/")
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		return name.Tag{}, fmt.Errorf("image reference %q has no registry host (e.g. ghcr.io/%s)", ref, ref)
	}
	return tag, nil
}

func (o options) labels() map[string]string {
	l := map[string]string{}
	version := o.Version
	if version == "" {
		if t, err := name.NewTag(o.Name); err == nil {
			version = t.TagStr()
		}
	}
	for k, v := range map[string]string{LabelVersion: version, LabelRevision: o.Revision, LabelSource: o.Source} {
		if v != "" {
			l[k] = v
		}
	}
	return l
}

// readBinary reads a regular file without following a symlink or blocking
// on a FIFO, capped at maxBinary.
func readBinary(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%w (run make build first)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxBinary {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", path, maxBinary)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxBinary+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxBinary {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxBinary)
	}
	return data, nil
}

// staticArch refuses a binary that needs a dynamic loader (the image has
// nothing else: build with CGO_ENABLED=0, as make does) and returns its
// GOARCH name.
func staticArch(path string, data []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%s is dynamically linked: build it with CGO_ENABLED=0", path)
		}
	}
	for _, s := range f.Sections {
		if s.Name == ".dynamic" || s.Name == ".interp" {
			return "", fmt.Errorf("%s is dynamically linked (%s section): build it with CGO_ENABLED=0", path, s.Name)
		}
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	case elf.EM_PPC64:
		return "ppc64le", nil
	case elf.EM_S390:
		return "s390x", nil
	case elf.EM_RISCV:
		return "riscv64", nil
	}
	return "", fmt.Errorf("%s: unsupported machine %v", path, f.Machine)
}

// layerFile is a regular file of the layer.
type layerFile struct {
	Path string // relative, e.g. bin/leakguard
	Data []byte
}

// makeLayer writes the files and their parent dirs as an uncompressed tar,
// sorted by name (a parent first), uid/gid 0, mode 0755, at mtime.
func makeLayer(files []layerFile, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b layerFile) int { return strings.Compare(a.Path, b.Path) })
	for _, f := range sorted {
		for _, d := range parents(f.Path) {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(header(d+"/", tar.TypeDir, 0, mtime)); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(header(f.Path, tar.TypeReg, int64(len(f.Data)), mtime)); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func header(name string, typ byte, size int64, mtime time.Time) *tar.Header {
	return &tar.Header{
		Name: name, Typeflag: typ, Size: size, Mode: 0o755, ModTime: mtime,
		Uid: 0, Gid: 0, Uname: "root", Gname: "root", Format: tar.FormatPAX,
	}
}

// parents of a relative path, outermost first: a/b/c → a, a/b.
func parents(p string) []string {
	var out []string
	for i, c := range p {
		if c == '/' {
			out = append(out, p[:i])
		}
	}
	return out
}

// writeAtomic writes path through a temp file in its dir, renamed over it.
func writeAtomic(path string, fill func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = fill(f)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
