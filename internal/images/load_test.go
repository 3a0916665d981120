package images

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lotse/lotse/internal/releases"
)

// startContainerd runs a private containerd (root, state, socket and config
// under a temporary directory, CRI disabled) and stops it when the test
// ends. It returns ctr and the socket.
func startContainerd(t *testing.T) (string, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	containerd, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("containerd is not installed (hack/install-deps.sh installs it)")
	}
	ctr, err := exec.LookPath("ctr")
	if err != nil {
		t.Skip("ctr is not installed (it comes with the containerd package)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(containerd, "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(exited) }()
	t.Cleanup(func() {
		// Tasks outlive containerd (their shims are not its children): end
		// any a failed test left, then containerd, then stray mounts.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := runCtr(ctx, ctr, sock, "tasks", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(string(out)) {
				_, _ = runCtr(ctx, ctr, sock, "tasks", "kill", "-s", "SIGKILL", id)
				time.Sleep(200 * time.Millisecond)
				_, _ = runCtr(ctx, ctr, sock, "tasks", "delete", "-f", id)
			}
		}
		if out, err := runCtr(ctx, ctr, sock, "containers", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(string(out)) {
				_, _ = runCtr(ctx, ctr, sock, "containers", "delete", id)
			}
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		unmountUnder(t, dir)
		if t.Failed() {
			if log, err := os.ReadFile(filepath.Join(dir, "containerd.log")); err == nil {
				t.Logf("containerd log:\n%s", log)
			}
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := runCtr(context.Background(), ctr, sock, "version"); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("containerd exited")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not come up")
		}
	}
	return ctr, sock
}

// unmountUnder detaches whatever is still mounted below dir, deepest first.
func unmountUnder(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mounts = append(mounts, fields[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mounts[i], syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", mounts[i], err)
		}
	}
}

// Images imported with ctr are in the k8s.io namespace, unpacked, under
// their reference, with the image ID the build recorded; and they run.
func TestImport(t *testing.T) {
	ctr, sock := startContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	b := &Builder{CacheDir: t.TempDir()}
	images := []Image{
		ForRelease(releases.Default().Version).Pause,
		FromBinary("echo", "v1", echoBinary(t), nil),
	}
	// CoreDNS from the shared cache, as TestCoreDNS does: minutes on a cold
	// cache, milliseconds after.
	shared := &Builder{CacheDir: releases.DefaultCacheDir(), Log: testLog{t}}
	corednsImg := ForRelease(releases.Default().Version).CoreDNS
	corednsTar, corednsStamp := ensure(t, shared, corednsImg)

	for _, img := range images {
		p, stamp := ensure(t, b, img)
		start := time.Now()
		if err := Import(ctx, ctr, sock, p); err != nil {
			t.Fatal(err)
		}
		t.Logf("imported %s (%d KiB) in %s", img, stamp.Size/1024, time.Since(start).Round(time.Millisecond))
		checkImported(t, ctx, ctr, sock, img.Ref(), stamp.ImageID)
		// Again: harmless.
		if err := Import(ctx, ctr, sock, p); err != nil {
			t.Errorf("second import: %v", err)
		}
	}
	start := time.Now()
	if err := Import(ctx, ctr, sock, corednsTar); err != nil {
		t.Fatal(err)
	}
	t.Logf("imported %s (%d KiB) in %s", corednsImg, corednsStamp.Size/1024, time.Since(start).Round(time.Millisecond))
	checkImported(t, ctx, ctr, sock, corednsImg.Ref(), corednsStamp.ImageID)

	t.Run("ImportedID", func(t *testing.T) {
		if id, err := ImportedID(ctx, ctr, sock, Ref("nosuch", "v1")); err != nil || id != "" {
			t.Errorf("ImportedID of a missing image = %q, %v", id, err)
		}
		pause := images[0]
		stamp, _ := b.Stamp(pause)
		// Already there with that ID: EnsureImported does not even open the tarball.
		if err := EnsureImported(ctx, ctr, sock, "/nonexistent.tar", pause.Ref(), stamp.ImageID); err != nil {
			t.Errorf("EnsureImported of a present image: %v", err)
		}
		if err := EnsureImported(ctx, ctr, sock, "/nonexistent.tar", pause.Ref(), "sha256:0000"); err == nil {
			t.Errorf("EnsureImported of a different image ID did not import")
		}
	})

	t.Run("bad tarball", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.tar")
		if err := os.WriteFile(bad, []byte("not a tarball"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := Import(ctx, ctr, sock, bad); err == nil || !strings.Contains(err.Error(), "bad.tar") {
			t.Errorf("Import of garbage = %v", err)
		}
	})

	// What Push put into a registry, containerd pulls by the digest Push
	// returned, as the same image.
	t.Run("pull what was pushed", func(t *testing.T) {
		echo := images[1]
		tar, stamp := ensure(t, b, echo)
		reg := startRegistry(t, "", "")
		pinned, err := Repository{Name: reg.host() + "/lotse", PlainHTTP: true}.Push(ctx, tar, echo)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := runCtr(ctx, ctr, sock, "images", "pull", "--plain-http", "--platform", "linux/amd64", pinned); err != nil {
			t.Fatalf("ctr pull %s: %v", pinned, err)
		}
		checkImported(t, ctx, ctr, sock, pinned, stamp.ImageID)
	})

	if _, err := exec.LookPath("runc"); err != nil {
		t.Log("runc is not installed; not running the images")
		return
	}
	// Run them under runc, without cgroups (nothing left on the host).
	run := func(t *testing.T, id string, args ...string) string {
		t.Helper()
		out, err := runCtr(ctx, ctr, sock, append([]string{"run", "--rm", "--cgroup", ""}, args...)...)
		if err != nil {
			t.Fatalf("ctr run %s: %v", id, err)
		}
		return string(out)
	}
	t.Run("run pause", func(t *testing.T) {
		pause := images[0]
		want := fmt.Sprintf("pause.c v%s-%s\n", pause.Tag, pause.Source)
		if out := run(t, "pause", pause.Ref(), "pause-v", "/pause", "-v"); out != want {
			t.Errorf("pause -v in a container = %q, want %q", out, want)
		}
	})
	t.Run("run echo", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hi %s\n", r.URL.Path)
		}))
		defer srv.Close()
		out := run(t, "echo", "--net-host", images[1].Ref(), "echo-get", "/echo", "get", srv.URL+"/from-container")
		if out != "hi /from-container\n" {
			t.Errorf("echo get in a container = %q", out)
		}
	})
	t.Run("run coredns", func(t *testing.T) {
		out := run(t, "coredns", corednsImg.Ref(), "coredns-version", "/coredns", "-version")
		if !strings.Contains(out, "CoreDNS-"+strings.TrimPrefix(corednsImg.Tag, "v")) {
			t.Errorf("coredns -version in a container = %q", out)
		}
	})
}

func checkImported(t *testing.T, ctx context.Context, ctr, sock, ref, wantID string) {
	t.Helper()
	id, err := ImportedID(ctx, ctr, sock, ref)
	if err != nil {
		t.Fatal(err)
	}
	if id != wantID {
		t.Errorf("%s imported as image %s, the build recorded %s", ref, id, wantID)
	}
	out, err := runCtr(ctx, ctr, sock, "images", "check", "name=="+ref)
	if err != nil {
		t.Fatal(err)
	}
	// REF TYPE DIGEST STATUS SIZE UNPACKED
	var line string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, ref+" ") {
			line = l
		}
	}
	if !strings.Contains(line, "complete") || !strings.HasSuffix(strings.TrimSpace(line), "true") {
		t.Errorf("%s is not complete and unpacked:\n%s", ref, bytes.TrimSpace(out))
	}
}
