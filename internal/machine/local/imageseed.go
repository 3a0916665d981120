package local

// Image seeds: every machine needs the same ~10 image tarballs of its
// release imported into its own containerd, which took a new machine about
// 7 s of its boot (under the machine's CPU quota) and ~450 MB of disk. A
// seed is a containerd root with one set of images imported once, outside
// any machine; a new machine's root starts as a hard-linked copy of it
// (the content store and unpacked layers never change once written; the
// two bolt databases, which do, are real copies). The copy takes tens of
// milliseconds and no disk beyond the databases.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/lotse/lotse/internal/fsutil"
)

// keepSeeds is how many seeds (image sets) stay on disk: the release a
// host runs, the one it upgrades from, and one for a user image added.
const keepSeeds = 3

// seedDatabases are the files of a containerd root that containerd
// writes to: each machine gets its own copy.
var seedDatabases = []string{
	filepath.Join("io.containerd.metadata.v1.bolt", "meta.db"),
	filepath.Join("io.containerd.snapshotter.v1.overlayfs", "metadata.db"),
}

// seeds builds and hands out image seeds under one directory.
type seeds struct {
	dir string
	// mu: builders and pruners exclusively, machines copying a seed
	// shared.
	mu sync.RWMutex
	// failed remembers builds that failed, by key (under mu).
	failed map[string]failedSeed
}

// seedKey names a set of image tarballs by their paths and modification
// times, as the import markers do.
func seedKey(images []string) (string, error) {
	sorted := append([]string(nil), images...)
	sort.Strings(sorted)
	h := sha256.New()
	for _, img := range sorted {
		fi, err := os.Stat(img)
		if err != nil {
			return "", fmt.Errorf("image %s: %w", img, err)
		}
		fmt.Fprintf(h, "%s %d %d\n", img, fi.Size(), fi.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func (s *seeds) path(key string) string { return filepath.Join(s.dir, key) }

// seedRoot copies the seed of a machine's images into root, which must
// not exist yet, building the seed first if needed. It reports whether
// it did; false with no error means the host cannot hard-link there and
// the machine imports its images itself.
func (s *seeds) seedRoot(ctx context.Context, images []string, root string) (bool, error) {
	key, err := seedKey(images)
	if err != nil {
		return false, err
	}
	if err := s.ensure(ctx, key, images); err != nil {
		return false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	seed := filepath.Join(s.path(key), "root")
	if _, err := os.Stat(seed); err != nil {
		return false, fmt.Errorf("image seed %s: %w", key, err) // pruned in between: the next try builds it again
	}
	now := time.Now()
	_ = os.Chtimes(s.path(key), now, now) // last use, for pruning
	tmp := root + ".seeding"
	if err := os.RemoveAll(tmp); err != nil {
		return false, err
	}
	// cp -a keeps owners, modes and extended attributes (overlay opaque
	// directories carry one); --link makes every file a hard link.
	if out, err := exec.CommandContext(ctx, "cp", "-a", "--link", seed, tmp).CombinedOutput(); err != nil {
		_ = os.RemoveAll(tmp)
		if errors.Is(linkError(s.path(key), filepath.Dir(root)), syscall.EXDEV) {
			return false, nil
		}
		return false, fmt.Errorf("copy image seed: %v: %s", err, out)
	}
	for _, db := range seedDatabases {
		if err := fsutil.CopyFileAtomic(filepath.Join(tmp, db), filepath.Join(tmp, db)); err != nil && !errors.Is(err, os.ErrNotExist) {
			_ = os.RemoveAll(tmp)
			return false, err
		}
	}
	return true, os.Rename(tmp, root)
}

// linkError tries a hard link from dir to target's directory, to tell a
// cross-filesystem state directory from other failures.
func linkError(dir, target string) error {
	probe := filepath.Join(dir, "complete")
	dst := filepath.Join(target, ".link-probe")
	defer os.Remove(dst)
	return os.Link(probe, dst)
}

// retryFailedSeed is how long a seed whose build failed is not tried
// again (machines import their images themselves meanwhile).
const retryFailedSeed = 5 * time.Minute

// ensure builds the seed of key unless it is there.
func (s *seeds) ensure(ctx context.Context, key string, images []string) error {
	complete := filepath.Join(s.path(key), "complete")
	if _, err := os.Stat(complete); err == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(complete); err == nil {
		return nil // built while this one waited
	}
	if f, ok := s.failed[key]; ok && time.Since(f.at) < retryFailedSeed {
		return f.err
	}
	err := s.build(ctx, key, images)
	if err != nil {
		if s.failed == nil {
			s.failed = map[string]failedSeed{}
		}
		s.failed[key] = failedSeed{time.Now(), err}
	}
	return err
}

type failedSeed struct {
	at  time.Time
	err error
}

// build makes the seed of key; the caller holds s.mu.
func (s *seeds) build(ctx context.Context, key string, images []string) error {
	s.prune(key)
	tmp := s.path(key) + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	if err := importIntoSeed(ctx, tmp, runName(s.dir, key), images); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("image seed: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), nil, 0o600); err != nil {
		return err
	}
	if err := os.RemoveAll(s.path(key)); err != nil {
		return err
	}
	return os.Rename(tmp, s.path(key))
}

// prune removes unfinished seeds and all but the newest keepSeeds-1
// complete ones other than key (which is about to be built).
func (s *seeds) prune(key string) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	type seed struct {
		name string
		used time.Time
	}
	var done []seed
	for _, e := range entries {
		name := e.Name()
		if filepath.Ext(name) == ".tmp" || name == key {
			_ = os.RemoveAll(filepath.Join(s.dir, name))
			continue
		}
		if fi, err := e.Info(); err == nil {
			done = append(done, seed{name, fi.ModTime()})
		}
	}
	sort.Slice(done, func(i, j int) bool { return done[i].used.After(done[j].used) })
	for i := keepSeeds - 1; i < len(done); i++ {
		// A seed used within the hour stays even beyond keepSeeds: many
		// image sets in use at once must not evict each other's seeds.
		if time.Since(done[i].used) > time.Hour {
			_ = os.RemoveAll(filepath.Join(s.dir, done[i].name))
		}
	}
}

// runName names the runtime directory of a seed build: short (socket
// paths are limited), and distinct per state directory, since two lotse
// instances may build a seed of the same images at once.
func runName(seedsDir, key string) string {
	sum := sha256.Sum256([]byte(seedsDir))
	return "seed-" + hex.EncodeToString(sum[:3]) + "-" + key[:8]
}

// importIntoSeed runs a containerd of its own over dir/root (without the
// CRI plugin: nothing runs in a seed), imports the images, and stops it.
func importIntoSeed(ctx context.Context, dir, runDir string, images []string) error {
	run := filepath.Join("/run/lotse", runDir)
	if err := os.RemoveAll(run); err != nil {
		return err
	}
	if err := os.MkdirAll(run, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(run)
	socket := filepath.Join(run, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(run, "state"), socket, socket+".ttrpc")
	configPath := filepath.Join(run, "containerd.toml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command("/usr/bin/containerd", "--config", configPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Should lotse die while it builds, containerd goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); !socketReady(socket); time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			return fmt.Errorf("containerd exited at start (see %s)", logFile.Name())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not listening after 10 s (see %s)", logFile.Name())
		}
	}
	return importTarballs(ctx, socket, images, nil)
}

// importTarballs imports image tarballs into the containerd at socket, a
// few at a time (reading and unpacking overlap); done, if set, is called
// after each.
func importTarballs(ctx context.Context, socket string, images []string, done func(img string) error) error {
	const parallel = 3
	sem := make(chan struct{}, parallel)
	errs := make(chan error, len(images))
	var wg sync.WaitGroup
	for _, img := range images {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cmd := exec.CommandContext(ctx, "ctr", "--address", socket, "-n", "k8s.io", "images", "import", img)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("import %s: %v: %s", filepath.Base(img), err, out)
				return
			}
			if done != nil {
				if err := done(img); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when none failed
}

// importMarker is the file that records an image tarball (at its
// modification time) as imported into a machine.
func importMarker(m *Machine, img string) (string, error) {
	fi, err := os.Stat(img)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", img, err)
	}
	return m.path("containerd", "imported-"+filepath.Base(img)+"-"+strconv.FormatInt(fi.ModTime().UnixNano(), 10)), nil
}
