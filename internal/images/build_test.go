package images

import (
	"github.com/lotse/lotse/internal/gobuild"

	"github.com/lotse/lotse/internal/fsutil"

	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

var (
	testTmp   string
	echoOnce  sync.Once
	echoPath  string
	echoError error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lotse-images-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testTmp = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// echoBinary builds test/images/echo once per test run, statically.
func echoBinary(t *testing.T) string {
	t.Helper()
	echoOnce.Do(func() {
		out := filepath.Join(testTmp, "echo")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./test/images/echo")
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(gobuild.Env(), "GOFLAGS=") // the lotse module: no -mod=mod
		if b, err := cmd.CombinedOutput(); err != nil {
			echoError = fmt.Errorf("build echo: %v\n%s", err, b)
			return
		}
		echoPath = out
	})
	if echoError != nil {
		t.Fatal(echoError)
	}
	return echoPath
}

// syncBuffer is a log several builders may write at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) builds() int { return strings.Count(s.String(), ": building\n") }

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	s, err := FileSHA256(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ensure(t *testing.T, b *Builder, img Image) (string, Stamp) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	p, err := b.Ensure(ctx, img)
	if err != nil {
		t.Fatalf("Ensure(%s): %v", img, err)
	}
	if p != b.TarPath(img) {
		t.Errorf("Ensure returned %s, want %s", p, b.TarPath(img))
	}
	s, err := b.Stamp(img)
	if err != nil {
		t.Fatalf("no stamp after Ensure(%s): %v", img, err)
	}
	return p, s
}

// layerFile is one entry of an image's layer.
type layerFile struct {
	hdr  *tar.Header
	data []byte
}

// readBack loads a tarball as `ctr images import` would see it: by its tag.
func readBack(t *testing.T, tarPath, ref string) (v1.Image, *v1.ConfigFile, map[string]layerFile) {
	t.Helper()
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		t.Fatalf("tarball.ImageFromPath(%s, %s): %v", tarPath, ref, err)
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(tarPath) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || !reflect.DeepEqual(m[0].RepoTags, []string{ref}) {
		t.Errorf("manifest.json = %+v, want one image tagged %s", m, ref)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]layerFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = layerFile{h, data}
	}
	return img, cfg, files
}

// extract writes the layer file at name to dir and returns its path.
func extract(t *testing.T, files map[string]layerFile, name, dir string) string {
	t.Helper()
	f, ok := files[name]
	if !ok {
		t.Fatalf("layer has no %s", name)
	}
	p := filepath.Join(dir, filepath.Base(name))
	if err := os.WriteFile(p, f.data, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFromBinaryTarball(t *testing.T) {
	bin := echoBinary(t)
	sum := fileSum(t, bin)
	tests := []struct {
		name       string
		img        Image
		entrypoint []string
		file       string
		dirs       []string
	}{
		{"default entrypoint", FromBinary("echo", "v1", bin, nil), []string{"/echo"}, "echo", nil},
		{"entrypoint with args", FromBinary("echo", "v2", bin, []string{"/echo", "serve"}), []string{"/echo", "serve"}, "echo", nil},
		{"nested path", FromBinary("tool", "1.0.0", bin, []string{"/usr/local/bin/tool"}), []string{"/usr/local/bin/tool"}, "usr/local/bin/tool", []string{"usr/", "usr/local/", "usr/local/bin/"}},
	}
	b := &Builder{CacheDir: t.TempDir()}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, stamp := ensure(t, b, tt.img)
			if want := filepath.Join(b.CacheDir, "images", tt.img.Name+"-"+tt.img.Tag+".tar"); p != want {
				t.Errorf("tarball at %s, want %s", p, want)
			}
			img, cfg, files := readBack(t, p, tt.img.Ref())
			if cfg.OS != "linux" || cfg.Architecture != "amd64" {
				t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
			}
			if !reflect.DeepEqual(cfg.Config.Entrypoint, tt.entrypoint) || cfg.Config.Cmd != nil {
				t.Errorf("entrypoint %q cmd %q, want %q and no cmd", cfg.Config.Entrypoint, cfg.Config.Cmd, tt.entrypoint)
			}
			if !cfg.Created.Time.Equal(epoch) {
				t.Errorf("created %s, want %s", cfg.Created.Time, epoch)
			}
			if id, _ := img.ConfigName(); id.String() != stamp.ImageID {
				t.Errorf("config digest %s, stamp says %s", id, stamp.ImageID)
			}
			if len(files) != 1+len(tt.dirs) {
				var names []string
				for n := range files {
					names = append(names, n)
				}
				t.Errorf("layer has %q, want %s and %q", names, tt.file, tt.dirs)
			}
			for _, d := range tt.dirs {
				if h := files[d].hdr; h == nil || h.Typeflag != tar.TypeDir || h.Mode != 0o755 {
					t.Errorf("directory %s: %+v", d, h)
				}
			}
			f, ok := files[tt.file]
			if !ok {
				t.Fatalf("layer has no %s", tt.file)
			}
			if f.hdr.Mode != 0o755 || f.hdr.Uid != 0 || f.hdr.Gid != 0 || !f.hdr.ModTime.Equal(epoch) || f.hdr.Typeflag != tar.TypeReg {
				t.Errorf("%s: mode %o uid %d gid %d mtime %s type %c", tt.file, f.hdr.Mode, f.hdr.Uid, f.hdr.Gid, f.hdr.ModTime, f.hdr.Typeflag)
			}
			if got := sha256.Sum256(f.data); hex.EncodeToString(got[:]) != sum {
				t.Errorf("%s in the layer differs from the binary", tt.file)
			}
		})
	}
}

// The same binary gives the same image, byte for byte, whatever the cache,
// the binary's path or its mtime.
func TestFromBinaryReproducible(t *testing.T) {
	bin := echoBinary(t)
	other := filepath.Join(t.TempDir(), "elsewhere")
	copyFile(t, bin, other)
	if err := os.Chtimes(other, time.Unix(1e9, 0), time.Unix(1e9, 0)); err != nil {
		t.Fatal(err)
	}
	p1, s1 := ensure(t, &Builder{CacheDir: t.TempDir()}, FromBinary("echo", "v1", bin, nil))
	p2, s2 := ensure(t, &Builder{CacheDir: t.TempDir()}, FromBinary("echo", "v1", other, nil))
	if s1.ImageID != s2.ImageID || s1.ManifestDigest != s2.ManifestDigest {
		t.Errorf("digests differ: %s %s vs %s %s", s1.ImageID, s1.ManifestDigest, s2.ImageID, s2.ManifestDigest)
	}
	if fileSum(t, p1) != fileSum(t, p2) {
		t.Errorf("tarballs differ")
	}
	// A different tag is a different tarball but the same image.
	_, s3 := ensure(t, &Builder{CacheDir: t.TempDir()}, FromBinary("echo", "v9", bin, nil))
	if s3.ImageID != s1.ImageID {
		t.Errorf("retagging changed the image ID: %s vs %s", s3.ImageID, s1.ImageID)
	}
	// A different entrypoint is a different image.
	_, s4 := ensure(t, &Builder{CacheDir: t.TempDir()}, FromBinary("echo", "v1", bin, []string{"/echo", "serve"}))
	if s4.ImageID == s1.ImageID {
		t.Errorf("changing the entrypoint kept image ID %s", s1.ImageID)
	}
	t.Logf("echo image %s, tarball %d KiB", s1.ImageID, s1.Size/1024)
}

func TestEnsureIdempotent(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "echo")
	copyFile(t, echoBinary(t), bin)
	log := &syncBuffer{}
	b := &Builder{CacheDir: t.TempDir(), Log: log}
	img := FromBinary("echo", "v1", bin, nil)

	p, s1 := ensure(t, b, img)
	fi1, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, s2 := ensure(t, b, img)
	warm := time.Since(start)
	fi2, _ := os.Stat(p)
	if n := log.builds(); n != 1 {
		t.Errorf("%d builds after two Ensure calls, want 1:\n%s", n, log)
	}
	if !fi2.ModTime().Equal(fi1.ModTime()) || s1 != s2 {
		t.Errorf("second Ensure rewrote the tarball or its stamp")
	}
	t.Logf("warm Ensure took %s", warm)

	// A changed binary is rebuilt under the same name and tag.
	f, err := os.OpenFile(bin, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("trailing bytes change the digest, not the ELF")
	f.Close()
	_, s3 := ensure(t, b, img)
	if n := log.builds(); n != 2 {
		t.Errorf("%d builds after the binary changed, want 2", n)
	}
	if s3.ImageID == s1.ImageID {
		t.Errorf("the image ID did not change with the binary")
	}

	// A tarball that does not match its stamp (truncated, replaced) is rebuilt.
	if err := os.WriteFile(p, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, s4 := ensure(t, b, img)
	if n := log.builds(); n != 3 || s4.ImageID != s3.ImageID {
		t.Errorf("after corrupting the tarball: %d builds, image %s (want 3, %s)", n, s4.ImageID, s3.ImageID)
	}
}

func TestEnsureConcurrent(t *testing.T) {
	bin := echoBinary(t)
	log := &syncBuffer{}
	dir := t.TempDir()
	img := FromBinary("echo", "v1", bin, nil)
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Separate builders, as separate processes would have.
			_, errs[i] = (&Builder{CacheDir: dir, Log: log}).Ensure(context.Background(), img)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := log.builds(); got != 1 {
		t.Errorf("%d concurrent Ensure calls built %d times, want once", n, got)
	}
	readBack(t, (&Builder{CacheDir: dir}).TarPath(img), img.Ref())
}

func TestEnsureRejects(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "script")
	if err := os.WriteFile(text, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dynamic, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		img     Image
		wantErr string
	}{
		{"dynamic binary", FromBinary("true", "v1", dynamic, nil), "dynamically linked"},
		{"not ELF", FromBinary("script", "v1", text, nil), "not an ELF"},
		{"missing binary", FromBinary("gone", "v1", filepath.Join(dir, "gone"), nil), "no such file"},
		{"directory", FromBinary("dir", "v1", dir, nil), "is a directory"},
		{"zero Set", ForRelease("1.1.1").Pause, "no name or tag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &Builder{CacheDir: t.TempDir()}
			_, err := b.Ensure(context.Background(), tt.img)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if _, err := b.Stamp(tt.img); err == nil {
				t.Errorf("a failed build left a stamp")
			}
			if _, err := os.Stat(b.TarPath(tt.img)); err == nil {
				t.Errorf("a failed build left a tarball")
			}
			leftovers, _ := filepath.Glob(filepath.Join(b.CacheDir, "images", "*.tmp"))
			if len(leftovers) > 0 {
				t.Errorf("temporary files left: %q", leftovers)
			}
		})
	}
}

// A rebuild that fails leaves the old tarball unusable: Ensure must not hand
// out a tarball whose inputs it could not build.
func TestFailedRebuildLeavesNothingUsable(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "echo")
	copyFile(t, echoBinary(t), bin)
	b := &Builder{CacheDir: t.TempDir()}
	img := FromBinary("echo", "v1", bin, nil)
	ensure(t, b, img)

	dynamic, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, dynamic, bin)
	if _, err := b.Ensure(context.Background(), img); err == nil {
		t.Fatal("Ensure accepted a dynamic binary")
	}
	if _, err := b.Stamp(img); err == nil {
		t.Fatal("the stamp of the old build survived a failed rebuild")
	}
	copyFile(t, echoBinary(t), bin)
	ensure(t, b, img)
}

func TestEnsureCancelledWhileLocked(t *testing.T) {
	b := &Builder{CacheDir: t.TempDir()}
	img := FromBinary("echo", "v1", echoBinary(t), nil)
	if err := os.MkdirAll(filepath.Dir(b.TarPath(img)), 0o755); err != nil {
		t.Fatal(err)
	}
	unlock, err := fsutil.Lock(context.Background(), b.TarPath(img)+".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := b.Ensure(ctx, img); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ensure while another build holds the lock = %v, want a deadline error", err)
	}
}
