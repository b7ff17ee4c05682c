package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations of the image's entry in index.json: containerd's importer
// names the image from the first (as containerd's own exporter writes it);
// the second is the OCI layout's tag.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// DockerManifest is one entry of the docker-save manifest.json, which
// docker load reads (docker 20.10 cannot load an OCI layout by itself).
type DockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// writeArchive writes img as an OCI image layout (oci-layout, index.json,
// blobs/sha256/*) that also carries a docker manifest.json pointing at the
// same blobs, as containerd's exporter does: one file for ctr images import
// and docker load. Entries are sorted, root-owned, at mtime.
//
// ref is the reference as given: go-containerregistry would spell docker.io
// as index.docker.io, which containerd would then import under that name.
func writeArchive(w io.Writer, img v1.Image, ref string, tag name.Tag, mtime time.Time) error {
	blobs := map[string][]byte{}
	add := func(h v1.Hash, b []byte) string {
		p := "blobs/" + h.Algorithm + "/" + h.Hex
		blobs[p] = b
		return p
	}

	manifest, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	mdigest, err := img.Digest()
	if err != nil {
		return err
	}
	add(mdigest, manifest)

	config, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cdigest, err := img.ConfigName()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	dm := DockerManifest{Config: add(cdigest, config), RepoTags: []string{ref}}

	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		b, err := readAll(l.Compressed)
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		dm.Layers = append(dm.Layers, add(d, b))
	}

	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: types.OCIManifestSchema1,
			Size:      int64(len(manifest)),
			Digest:    mdigest,
			Annotations: map[string]string{
				AnnotationImageName: ref,
				AnnotationRefName:   tag.TagStr(),
			},
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}
	dockerJSON, err := json.Marshal([]DockerManifest{dm})
	if err != nil {
		return err
	}

	files := map[string][]byte{
		"oci-layout":    []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json":    indexJSON,
		"manifest.json": dockerJSON,
	}
	for p, b := range blobs {
		files[p] = b
	}
	return writeTar(w, files, mtime)
}

func readAll(open func() (io.ReadCloser, error)) ([]byte, error) {
	rc, err := open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// writeTar writes files (and their parent dirs) sorted by name, mode 0644
// (dirs 0755), uid/gid 0, at mtime.
func writeTar(w io.Writer, files map[string][]byte, mtime time.Time) error {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	for _, n := range names {
		for _, d := range parents(n) {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			h := header(d+"/", tar.TypeDir, 0, mtime)
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
		}
		h := header(n, tar.TypeReg, int64(len(files[n])), mtime)
		h.Mode = 0o644
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, bytes.NewReader(files[n])); err != nil {
			return err
		}
	}
	return tw.Close()
}
