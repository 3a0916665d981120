package local

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
)

// testImage writes an image tarball of two layers: the second makes /etc
// opaque (a whiteout the overlay snapshotter turns into an extended
// attribute, which a seed's copy must keep).
func testImage(t *testing.T, dir, ref string) string {
	t.Helper()
	layer := func(files map[string]string) v1.Layer {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		_ = tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
		for n, content := range files {
			_ = tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))})
			_, _ = tw.Write([]byte(content))
		}
		_ = tw.Close()
		data := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	img, err := mutate.AppendLayers(empty.Image,
		layer(map[string]string{"etc/old": "old"}),
		layer(map[string]string{"etc/.wh..wh..opq": "", "etc/new": ref}))
	if err != nil {
		t.Fatal(err)
	}
	// ctr imports only images of this host's platform.
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, strings.NewReplacer("/", "-", ":", "-").Replace(ref)+".tar")
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		t.Fatal(err)
	}
	return path
}

func needContainerd(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	for _, bin := range []string{"/usr/bin/containerd", "ctr", "cp"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (make deps installs it)", bin)
		}
	}
}

func nlink(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Nlink)
}

// TestImageSeeds: two machines seeded from one build share the image
// content by hard links, own their databases, keep the opaque directory's
// attribute, and their containerd lists the image; seeds beyond
// keepSeeds are pruned, least recently used first.
func TestImageSeeds(t *testing.T) {
	needContainerd(t)
	ctx := context.Background()
	dir := t.TempDir()
	s := &seeds{dir: filepath.Join(dir, "image-seeds")}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	images := []string{testImage(t, dir, "registry.lotse.local/seed-test:1")}

	var roots []string
	for i := range 2 {
		root := filepath.Join(dir, fmt.Sprintf("machine-%d", i), "root")
		if err := os.MkdirAll(filepath.Dir(root), 0o700); err != nil {
			t.Fatal(err)
		}
		seeded, err := s.seedRoot(ctx, images, root)
		if err != nil || !seeded {
			t.Fatalf("seed machine %d: %t, %v", i, seeded, err)
		}
		roots = append(roots, root)
	}

	blobs, _ := filepath.Glob(filepath.Join(roots[0], "io.containerd.content.v1.content", "blobs", "sha256", "*"))
	if len(blobs) == 0 {
		t.Fatal("no content blobs in the seeded root")
	}
	for _, b := range blobs {
		if n := nlink(t, b); n < 3 { // the seed and both machines
			t.Errorf("blob %s has %d links, want it shared", filepath.Base(b), n)
		}
	}
	for _, db := range seedDatabases {
		if n := nlink(t, filepath.Join(roots[0], db)); n != 1 {
			t.Errorf("%s has %d links: each machine needs its own", db, n)
		}
	}
	opaque := 0
	dirs, _ := filepath.Glob(filepath.Join(roots[1], "io.containerd.snapshotter.v1.overlayfs", "snapshots", "*", "fs", "etc"))
	for _, d := range dirs {
		buf := make([]byte, 8)
		if n, err := unix.Getxattr(d, "trusted.overlay.opaque", buf); err == nil && string(buf[:n]) == "y" {
			opaque++
		}
	}
	if opaque != 1 {
		t.Errorf("%d of %d unpacked /etc directories are opaque in the copy, want 1", opaque, len(dirs))
	}

	// A containerd over a seeded root knows the image.
	run := filepath.Join("/run/lotse", fmt.Sprintf("seedtest-%d", os.Getpid()))
	if err := os.MkdirAll(run, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(run) })
	socket := filepath.Join(run, "c.sock")
	config := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n",
		roots[1], filepath.Join(run, "state"), socket, socket+".ttrpc")
	if err := os.WriteFile(filepath.Join(run, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/containerd", "--config", filepath.Join(run, "config.toml"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); !socketReady(socket); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("containerd over the seeded root did not start")
		}
	}
	out, err := exec.Command("ctr", "--address", socket, "-n", "k8s.io", "images", "check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "registry.lotse.local/seed-test:1") || !strings.Contains(string(out), "complete") {
		t.Errorf("images in the seeded containerd: %v\n%s", err, out)
	}

	// Seeds of more image sets than keepSeeds: the least recently used
	// goes once it has not been used for an hour.
	first, _ := seedKey(images)
	long := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(s.path(first), long, long); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for i := 2; i <= keepSeeds+1; i++ {
		imgs := []string{testImage(t, dir, fmt.Sprintf("registry.lotse.local/seed-test:%d", i))}
		key, _ := seedKey(imgs)
		keys = append(keys, key)
		if err := s.ensure(ctx, key, imgs); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // distinct modification times
	}
	entries, _ := os.ReadDir(s.dir)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if len(left) != keepSeeds || strings.Contains(strings.Join(left, " "), first) {
		t.Errorf("seeds left %v: want the %d newest %v", left, keepSeeds, keys)
	}
}
