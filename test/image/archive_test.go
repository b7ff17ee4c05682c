package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// readTar returns an archive's entries, in order, and their contents.
func readTar(t *testing.T, r io.Reader) ([]*tar.Header, map[string][]byte) {
	t.Helper()
	tr := tar.NewReader(r)
	var hdrs []*tar.Header
	data := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := data[h.Name]; dup {
			t.Fatalf("entry %s twice", h.Name)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		hdrs, data[h.Name] = append(hdrs, h), b
	}
}

// checkHeaders: sorted, root-owned, at the creation time, fixed modes.
func checkHeaders(t *testing.T, what string, hdrs []*tar.Header, fileMode int64) {
	t.Helper()
	names := make([]string, len(hdrs))
	for i, h := range hdrs {
		names[i] = h.Name
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: %s owned by %d:%d, want 0:0", what, h.Name, h.Uid, h.Gid)
		}
		if !h.ModTime.Equal(time.Unix(testCreated, 0)) {
			t.Errorf("%s: %s mtime %v, want %v", what, h.Name, h.ModTime, time.Unix(testCreated, 0))
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if h.Mode != 0o755 || !strings.HasSuffix(h.Name, "/") {
				t.Errorf("%s: dir %s mode %o", what, h.Name, h.Mode)
			}
		case tar.TypeReg:
			if h.Mode != fileMode {
				t.Errorf("%s: %s mode %o, want %o", what, h.Name, h.Mode, fileMode)
			}
		default:
			t.Errorf("%s: %s has type %q: only dirs and regular files", what, h.Name, h.Typeflag)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("%s: entries not sorted: %v", what, names)
	}
}

func blob(t *testing.T, files map[string][]byte, h v1.Hash) []byte {
	t.Helper()
	b, ok := files["blobs/"+h.Algorithm+"/"+h.Hex]
	if !ok {
		t.Fatalf("blob %s missing", h)
	}
	return b
}

// TestArchive reads the archive as containerd and docker do: index.json →
// manifest → config and layer, and manifest.json → the same config and
// layer; every blob matches its digest; the layer holds exactly the four
// binaries of bin/, static, 0755, root-owned.
func TestArchive(t *testing.T) {
	f, err := os.Open(imageTar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdrs, files := readTar(t, f)
	checkHeaders(t, "archive", hdrs, 0o644)

	for name, b := range files {
		if hex, ok := strings.CutPrefix(name, "blobs/sha256/"); ok && hex != "" {
			if sum := sha256.Sum256(b); hexOf(sum[:]) != hex {
				t.Errorf("blob %s has digest %x", name, sum)
			}
		}
	}
	if got := string(files["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}

	var index v1.IndexManifest
	mustJSON(t, files["index.json"], &index)
	if index.SchemaVersion != 2 || index.MediaType != "application/vnd.oci.image.index.v1+json" || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %s", files["index.json"])
	}
	desc := index.Manifests[0]
	if desc.Annotations["io.containerd.image.name"] != testRef || desc.Annotations["org.opencontainers.image.ref.name"] != "t1" {
		t.Errorf("index annotations %v, want the name %s and the tag t1", desc.Annotations, testRef)
	}
	if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != goarch(t) {
		t.Errorf("index platform %+v", desc.Platform)
	}
	mraw := blob(t, files, desc.Digest)
	if int64(len(mraw)) != desc.Size || desc.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("manifest descriptor %+v, blob of %d bytes", desc, len(mraw))
	}
	var m v1.Manifest
	mustJSON(t, mraw, &m)
	if len(m.Layers) != 1 {
		t.Fatalf("manifest has %d layers, want 1: %s", len(m.Layers), mraw)
	}
	craw := blob(t, files, m.Config.Digest)
	var cf v1.ConfigFile
	mustJSON(t, craw, &cf)

	var dm []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	mustJSON(t, files["manifest.json"], &dm)
	if len(dm) != 1 || dm[0].Config != "blobs/sha256/"+m.Config.Digest.Hex ||
		!slices.Equal(dm[0].Layers, []string{"blobs/sha256/" + m.Layers[0].Digest.Hex}) ||
		!slices.Equal(dm[0].RepoTags, []string{testRef}) {
		t.Errorf("manifest.json %s does not point at the OCI manifest's config and layer as %s", files["manifest.json"], testRef)
	}

	if cf.OS != "linux" || cf.Architecture != goarch(t) || !cf.Created.Equal(time.Unix(testCreated, 0)) {
		t.Errorf("config os/arch/created %s/%s/%v", cf.OS, cf.Architecture, cf.Created)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/bin/leakguardctl"}) || len(cf.Config.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q", cf.Config.Entrypoint, cf.Config.Cmd)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.version":  "v0.0.0-test",
		"org.opencontainers.image.revision": "0123abcd",
		"org.opencontainers.image.source":   "https://example.com/leakguard",
	}
	if !maps.Equal(cf.Config.Labels, wantLabels) {
		t.Errorf("labels %v, want %v", cf.Config.Labels, wantLabels)
	}

	lraw := blob(t, files, m.Layers[0].Digest)
	if m.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" || m.Layers[0].Size != int64(len(lraw)) {
		t.Errorf("layer descriptor %+v, blob of %d bytes", m.Layers[0], len(lraw))
	}
	zr, err := gzip.NewReader(bytes.NewReader(lraw))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(plain); len(cf.RootFS.DiffIDs) != 1 || cf.RootFS.DiffIDs[0].Hex != hexOf(sum[:]) {
		t.Errorf("diff_ids %v, layer's uncompressed digest %x", cf.RootFS.DiffIDs, sum)
	}
	lhdrs, lfiles := readTar(t, bytes.NewReader(plain))
	checkHeaders(t, "layer", lhdrs, 0o755)
	var names []string
	for _, h := range lhdrs {
		names = append(names, h.Name)
	}
	want := []string{"bin/", "bin/leakguard", "bin/leakguard-hook", "bin/leakguard-nri", "bin/leakguardctl"}
	if !slices.Equal(names, want) {
		t.Errorf("layer entries %v, want %v (an empty base: no shell, nothing else)", names, want)
	}
	for _, n := range want[1:] {
		src, err := os.ReadFile(filepath.Join(binDir, filepath.Base(n)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(src, lfiles[n]) {
			t.Errorf("%s differs from %s", n, filepath.Join(binDir, filepath.Base(n)))
		}
		ef, err := elf.NewFile(bytes.NewReader(lfiles[n]))
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		for _, p := range ef.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked", n)
			}
		}
	}

	ref, err := os.ReadFile(imageRef)
	if err != nil {
		t.Fatal(err)
	}
	if string(ref) != testRef+"\n" {
		t.Errorf("ref file %q, want %q", ref, testRef+"\n")
	}
}

// TestReproducible: the same inputs give the same bytes.
func TestReproducible(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "again.tar")
	if b, err := exec.Command(mkimage, imageArgs(binDir, out, filepath.Join(dir, "again.ref"))...).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	a, b := sum(t, imageTar), sum(t, out)
	if a != b {
		t.Errorf("two builds differ: %s and %s", a, b)
	}
}

// TestRefused: a dynamic binary, a missing one, a symlink and a name
// without a registry or tag are refused, and nothing is written.
func TestRefused(t *testing.T) {
	self, err := os.Executable() // built by go test with cgo (-race): dynamic
	if err != nil {
		t.Fatal(err)
	}
	static := func(dir string) {
		for _, b := range []string{"leakguardctl", "leakguard", "leakguard-hook", "leakguard-nri"} {
			copyFile(t, filepath.Join(binDir, b), filepath.Join(dir, b))
		}
	}
	cases := []struct {
		name    string
		prepare func(dir string)
		ref     string
		code    int
		msg     string
	}{
		{"dynamic", func(d string) { static(d); copyFile(t, self, filepath.Join(d, "leakguard-nri")) }, testRef, 1, "dynamically linked"},
		{"missing", func(d string) { static(d); os.Remove(filepath.Join(d, "leakguard-hook")) }, testRef, 1, "leakguard-hook"},
		{"symlink", func(d string) {
			static(d)
			os.Remove(filepath.Join(d, "leakguard"))
			if err := os.Symlink(filepath.Join(binDir, "leakguard"), filepath.Join(d, "leakguard")); err != nil {
				t.Fatal(err)
			}
		}, testRef, 1, "leakguard"},
		{"no registry", static, "leakguard/leakguard:v1", 1, "registry"},
		{"no tag", static, "ghcr.io/leakguard/leakguard", 1, "image reference"},
		{"no name", static, "", 2, "--image is required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.prepare(dir)
			out, ref := filepath.Join(dir, "out.tar"), filepath.Join(dir, "out.ref")
			args := imageArgs(dir, out, ref)
			for i := range args {
				if args[i] == "--image" {
					args[i+1] = c.ref
				}
			}
			b, err := exec.Command(mkimage, args...).CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != c.code || !strings.Contains(string(b), c.msg) {
				t.Fatalf("exit %v, want %d with %q:\n%s", err, c.code, c.msg, b)
			}
			for _, p := range []string{out, ref} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Errorf("%s written (%v)", p, err)
				}
			}
			left, _ := filepath.Glob(filepath.Join(dir, ".out.*"))
			if len(left) > 0 {
				t.Errorf("temp files left: %v", left)
			}
		})
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func sum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hexOf(s[:])
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}

// goarch is the binaries' architecture, from leakguardctl's ELF header.
func goarch(t *testing.T) string {
	t.Helper()
	f, err := elf.Open(filepath.Join(binDir, "leakguardctl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64"
	case elf.EM_AARCH64:
		return "arm64"
	}
	t.Fatalf("unexpected machine %v", f.Machine)
	return ""
}
