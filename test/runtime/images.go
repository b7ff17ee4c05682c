package runtime

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Names of the test images. Full docker.io names: that is how CRI and docker
// refer to them; they are never pulled (no registry is reachable here).
const (
	PauseImage   = "docker.io/leakguard-test/pause:1"
	BusyboxImage = "docker.io/leakguard-test/busybox:1"
)

// File is one entry of an image's single layer.
type File struct {
	Path string      // absolute path inside the image
	Mode fs.FileMode // permission bits; 0 means 0644 (file) or 0755 (dir)
	Data []byte      // a regular file's contents
	Link string      // when set, a symlink to Link
	Dir  bool        // a directory
}

// ImageSpec is a one-layer image built offline.
type ImageSpec struct {
	Name       string // full reference, e.g. docker.io/leakguard-test/busybox:1
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
}

// Image is a built image, as archives each runtime can import.
type Image struct {
	Name string
	// OCIArchive is an OCI image layout in a tar, annotated with its name,
	// for `ctr -n k8s.io images import`.
	OCIArchive string
	// DockerArchive is in the docker-save format, for `docker load`
	// (docker 20.10 cannot load an OCI layout).
	DockerArchive string
}

// Build assembles spec into an image: its files as one layer on
// empty.Image, then the config (entrypoint, cmd, env, linux/GOARCH) that
// crane's CLI cannot set without a registry.
func Build(spec ImageSpec) (v1.Image, error) {
	layerTar, err := layerTar(spec.Files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", spec.Name, err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, fmt.Errorf("image %s: append layer: %w", spec.Name, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goruntime.GOARCH
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint, cf.Config.Cmd = spec.Entrypoint, spec.Cmd
	cf.Config.Env = spec.Env
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("image %s: config: %w", spec.Name, err)
	}
	return img, nil
}

// WriteArchives builds spec and writes both archives into dir.
func WriteArchives(dir string, spec ImageSpec) (Image, error) {
	img, err := Build(spec)
	if err != nil {
		return Image{}, err
	}
	tag, err := name.NewTag(spec.Name)
	if err != nil {
		return Image{}, fmt.Errorf("image name %q: %w", spec.Name, err)
	}
	base := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(tag.RepositoryStr()+"_"+tag.TagStr()))
	out := Image{Name: spec.Name, OCIArchive: base + ".oci.tar", DockerArchive: base + ".docker.tar"}

	if err := tarball.WriteToFile(out.DockerArchive, tag, img); err != nil {
		return Image{}, fmt.Errorf("image %s: docker archive: %w", spec.Name, err)
	}

	layoutDir, err := os.MkdirTemp(dir, "layout-")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(layoutDir)
	lp, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: OCI layout: %w", spec.Name, err)
	}
	err = lp.AppendImage(img,
		layout.WithAnnotations(map[string]string{
			"io.containerd.image.name":          spec.Name,
			"org.opencontainers.image.ref.name": tag.TagStr(),
		}),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: goruntime.GOARCH}))
	if err != nil {
		return Image{}, fmt.Errorf("image %s: OCI layout: %w", spec.Name, err)
	}
	if err := tarDir(layoutDir, out.OCIArchive); err != nil {
		return Image{}, fmt.Errorf("image %s: OCI archive: %w", spec.Name, err)
	}
	return out, nil
}

// TestImages are the images every runtime test needs.
type TestImages struct {
	Pause   Image
	Busybox Image
}

// BuildTestImages writes the pause image (test/cmd/pause as /pause) and the
// busybox image (Debian's static busybox with its applets linked in /bin)
// into dir. extra files are added to the busybox image.
func BuildTestImages(dir string, tools Tools, extra ...File) (TestImages, error) {
	var imgs TestImages
	pause, err := PauseSpec(tools.TestBinary("pause"))
	if err != nil {
		return imgs, err
	}
	if imgs.Pause, err = WriteArchives(dir, pause); err != nil {
		return imgs, err
	}
	bb, err := BusyboxSpec(BusyboxImage, extra...)
	if err != nil {
		return imgs, err
	}
	imgs.Busybox, err = WriteArchives(dir, bb)
	return imgs, err
}

// PauseSpec is the sandbox image: one static binary that waits for SIGTERM.
func PauseSpec(pauseBin string) (ImageSpec, error) {
	data, err := os.ReadFile(pauseBin)
	if err != nil {
		return ImageSpec{}, fmt.Errorf("pause binary: %w", err)
	}
	if err := mustBeStatic(pauseBin, data); err != nil {
		return ImageSpec{}, err
	}
	return ImageSpec{
		Name:       PauseImage,
		Files:      []File{{Path: "/pause", Mode: 0o755, Data: data}},
		Entrypoint: []string{"/pause"},
	}, nil
}

// mustBeStatic refuses a binary that needs a dynamic loader: the image holds
// nothing else (build test/cmd with CGO_ENABLED=0, as make does).
func mustBeStatic(path string, data []byte) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked: build it with CGO_ENABLED=0", path)
		}
	}
	return nil
}

// busyboxPath is Debian's busybox-static (a static binary: the image has
// no libc).
const busyboxPath = "/bin/busybox"

// BusyboxSpec is a small image with a shell and the usual tools: Debian's
// static busybox, a symlink per applet in /bin, a root user. extra files
// (say, a gssproxy config) are added; a later entry for a path wins.
func BusyboxSpec(imageName string, extra ...File) (ImageSpec, error) {
	data, err := os.ReadFile(busyboxPath)
	if err != nil {
		return ImageSpec{}, fmt.Errorf("static busybox (apt-get install busybox-static): %w", err)
	}
	if err := mustBeStatic(busyboxPath, data); err != nil {
		return ImageSpec{}, fmt.Errorf("%w (install busybox-static, not busybox)", err)
	}
	out, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		return ImageSpec{}, fmt.Errorf("busybox --list: %w", err)
	}
	files := []File{
		{Path: "/bin/busybox", Mode: 0o755, Data: data},
		{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\n")},
		{Path: "/etc/group", Data: []byte("root:x:0:\n")},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
		{Path: "/root", Dir: true, Mode: 0o700},
	}
	for _, d := range []string{"/proc", "/sys", "/dev", "/run", "/var"} {
		files = append(files, File{Path: d, Dir: true})
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" && !strings.Contains(applet, "/") {
			files = append(files, File{Path: "/bin/" + applet, Link: "busybox"})
		}
	}
	return ImageSpec{
		Name:  imageName,
		Files: append(files, extra...),
		Cmd:   []string{"/bin/sh"},
		Env:   []string{"PATH=/bin"},
	}, nil
}

// layerTar writes files as an uncompressed layer, parents first, owned by
// root, with a fixed time (the same spec gives the same digest).
func layerTar(files []File) ([]byte, error) {
	byPath := map[string]File{}
	for _, f := range files {
		p := path.Clean("/" + f.Path)
		if p == "/" {
			return nil, fmt.Errorf("image file with no path")
		}
		f.Path = p
		byPath[p] = f
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			if _, ok := byPath[dir]; !ok {
				byPath[dir] = File{Path: dir, Dir: true}
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	slices.Sort(paths) // a parent sorts before its children
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0).UTC()
	for _, p := range paths {
		f := byPath[p]
		hdr := &tar.Header{Name: strings.TrimPrefix(p, "/"), ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case f.Link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Link, 0o777
		case f.Dir:
			hdr.Typeflag, hdr.Mode = tar.TypeDir, int64(permOr(f.Mode, 0o755))
			hdr.Name += "/"
		default:
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, int64(permOr(f.Mode, 0o644)), int64(len(f.Data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func permOr(m, def fs.FileMode) fs.FileMode {
	if m == 0 {
		return def
	}
	return m & (fs.ModePerm | fs.ModeSticky | fs.ModeSetuid | fs.ModeSetgid)
}

// tarDir archives the regular files and dirs under dir, relative to it.
func tarDir(dir, dst string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
