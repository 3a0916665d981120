package releases

import (
	"github.com/lotse/lotse/internal/fsutil"

	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingSource is a fake Source: it writes a small file per component
// into binDir and counts its calls. failKubernetes/failEtcd make the next
// calls fail after writing a partial file.
type recordingSource struct {
	mu             sync.Mutex
	kubeCalls      int
	etcdCalls      int
	kubeDirs       []string
	etcdDirs       []string
	failKubernetes bool
	failEtcd       bool
	delay          time.Duration
}

func (s *recordingSource) EnsureKubernetes(ctx context.Context, r Release, binDir string, log io.Writer) error {
	s.mu.Lock()
	s.kubeCalls++
	s.kubeDirs = append(s.kubeDirs, binDir)
	fail, delay := s.failKubernetes, s.delay
	s.mu.Unlock()
	time.Sleep(delay)
	for i, c := range Components {
		if fail && i == 1 {
			return errors.New("fake build failure")
		}
		if err := os.WriteFile(filepath.Join(binDir, c), []byte("fake "+c+" "+r.Version), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (s *recordingSource) EnsureEtcd(ctx context.Context, version, binDir string, log io.Writer) error {
	s.mu.Lock()
	s.etcdCalls++
	s.etcdDirs = append(s.etcdDirs, binDir)
	fail, delay := s.failEtcd, s.delay
	s.mu.Unlock()
	time.Sleep(delay)
	if fail {
		return errors.New("fake etcd failure")
	}
	for _, c := range EtcdComponents {
		if err := os.WriteFile(filepath.Join(binDir, c), []byte("fake "+c+" "+version), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (s *recordingSource) EnsureCloudController(ctx context.Context, r Release, binDir string, log io.Writer) error {
	for _, c := range CloudControllerComponents {
		if err := os.WriteFile(filepath.Join(binDir, c), []byte("fake "+c+" "+r.Version), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (s *recordingSource) EnsureKonnectivity(ctx context.Context, version, binDir string, log io.Writer) error {
	for _, c := range KonnectivityComponents {
		if err := os.WriteFile(filepath.Join(binDir, c), []byte("fake "+c+" "+version), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (s *recordingSource) calls() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kubeCalls, s.etcdCalls
}

func (s *recordingSource) set(failKube, failEtcd bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failKubernetes, s.failEtcd = failKube, failEtcd
}

var testRelease = Release{Version: "1.36.3", Etcd: "3.6.16"}

func checkCalls(t *testing.T, src *recordingSource, wantKube, wantEtcd int) {
	t.Helper()
	k, e := src.calls()
	if k != wantKube || e != wantEtcd {
		t.Errorf("source calls: kubernetes=%d etcd=%d, want %d and %d", k, e, wantKube, wantEtcd)
	}
}

func checkBinaries(t *testing.T, s *Store, b Binaries, r Release) {
	t.Helper()
	if b.Release.Version != r.Version {
		t.Errorf("Binaries.Release = %s, want %s", b.Release.Version, r.Version)
	}
	for _, c := range Components {
		want := filepath.Join(s.Dir, "kubernetes", r.Version, "bin", c)
		if got := b.Path(c); got != want {
			t.Errorf("Path(%s) = %s, want %s", c, got, want)
		}
		if data, err := os.ReadFile(b.Path(c)); err != nil || string(data) != "fake "+c+" "+r.Version {
			t.Errorf("%s: content %q, err %v", c, data, err)
		}
	}
	for _, c := range EtcdComponents {
		want := filepath.Join(s.Dir, "etcd", r.Etcd, "bin", c)
		if got := b.Path(c); got != want {
			t.Errorf("Path(%s) = %s, want %s", c, got, want)
		}
		if data, err := os.ReadFile(b.Path(c)); err != nil || string(data) != "fake "+c+" "+r.Etcd {
			t.Errorf("%s: content %q, err %v", c, data, err)
		}
	}
	if got := b.Path("no-such-component"); got != "" {
		t.Errorf("Path of an unknown component = %q, want empty", got)
	}
}

func TestStoreEnsureIsIdempotent(t *testing.T) {
	src := &recordingSource{}
	s := &Store{Dir: t.TempDir(), Source: src}
	ctx := context.Background()

	if s.Installed(testRelease) {
		t.Fatal("Installed() = true on an empty store")
	}
	b, err := s.Ensure(ctx, testRelease, nil)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	checkCalls(t, src, 1, 1)
	checkBinaries(t, s, b, testRelease)
	if len(src.kubeDirs) != 1 || src.kubeDirs[0] != s.KubernetesBinDir(testRelease.Version) {
		t.Errorf("kubernetes source got binDir %v, want %s", src.kubeDirs, s.KubernetesBinDir(testRelease.Version))
	}
	if len(src.etcdDirs) != 1 || src.etcdDirs[0] != s.EtcdBinDir(testRelease.Etcd) {
		t.Errorf("etcd source got binDir %v, want %s", src.etcdDirs, s.EtcdBinDir(testRelease.Etcd))
	}
	if !s.Installed(testRelease) {
		t.Error("Installed() = false after Ensure")
	}

	b2, err := s.Ensure(ctx, testRelease, io.Discard)
	if err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	checkCalls(t, src, 1, 1)
	checkBinaries(t, s, b2, testRelease)

	b3, err := s.Binaries(testRelease)
	if err != nil {
		t.Fatalf("Binaries: %v", err)
	}
	checkBinaries(t, s, b3, testRelease)

	// A new Store on the same directory (a later lotse) trusts the stamps.
	src2 := &recordingSource{}
	s2 := &Store{Dir: s.Dir, Source: src2}
	if !s2.Installed(testRelease) {
		t.Error("Installed() = false for a fresh Store on a filled directory")
	}
	if _, err := s2.Ensure(ctx, testRelease, nil); err != nil {
		t.Fatalf("Ensure on a fresh Store: %v", err)
	}
	checkCalls(t, src2, 0, 0)
}

func TestStoreSharedEtcdBuiltOnce(t *testing.T) {
	src := &recordingSource{}
	s := &Store{Dir: t.TempDir(), Source: src}
	other := Release{Version: "1.35.4", Etcd: testRelease.Etcd}
	for _, r := range []Release{testRelease, other} {
		b, err := s.Ensure(context.Background(), r, nil)
		if err != nil {
			t.Fatalf("Ensure %s: %v", r.Version, err)
		}
		checkBinaries(t, s, b, r)
	}
	checkCalls(t, src, 2, 1)
}

func TestStoreBinariesMissing(t *testing.T) {
	tests := []struct {
		name string
		prep func(t *testing.T, s *Store)
	}{
		{"empty store", func(*testing.T, *Store) {}},
		{"kubernetes only", func(t *testing.T, s *Store) {
			stamp(t, s.KubernetesBinDir(testRelease.Version))
		}},
		{"etcd only", func(t *testing.T, s *Store) {
			stamp(t, s.EtcdBinDir(testRelease.Etcd))
		}},
		{"binaries without stamp", func(t *testing.T, s *Store) {
			for _, d := range []string{s.KubernetesBinDir(testRelease.Version), s.EtcdBinDir(testRelease.Etcd)} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(d, "kube-apiserver"), []byte("half"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"other release installed", func(t *testing.T, s *Store) {
			stamp(t, s.KubernetesBinDir("1.35.4"))
			stamp(t, s.EtcdBinDir(testRelease.Etcd))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore(t.TempDir())
			tt.prep(t, s)
			if s.Installed(testRelease) {
				t.Error("Installed() = true")
			}
			_, err := s.Binaries(testRelease)
			if err == nil {
				t.Fatal("Binaries on a missing release succeeded")
			}
			if want := "lotse release build " + testRelease.Version; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not hint at %q", err, want)
			}
		})
	}
}

func stamp(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, stampName), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestStoreFailedSourceIsRetried(t *testing.T) {
	tests := []struct {
		name               string
		failKube, failEtcd bool
		wantErr            string
		// calls after the failed and then the successful Ensure
		afterFail, afterRetry [2]int
	}{
		{"kubernetes fails", true, false, "kubernetes 1.36.3: fake build failure", [2]int{1, 0}, [2]int{2, 1}},
		{"etcd fails", false, true, "etcd 3.6.16: fake etcd failure", [2]int{1, 1}, [2]int{1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &recordingSource{}
			src.set(tt.failKube, tt.failEtcd)
			s := &Store{Dir: t.TempDir(), Source: src}
			_, err := s.Ensure(context.Background(), testRelease, nil)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Ensure error = %v, want %q", err, tt.wantErr)
			}
			checkCalls(t, src, tt.afterFail[0], tt.afterFail[1])
			if s.Installed(testRelease) {
				t.Error("Installed() = true after a failed Ensure")
			}
			if tt.failKube && stamped(s.KubernetesBinDir(testRelease.Version), Components) {
				t.Error("failed kubernetes build left a stamp")
			}
			if tt.failEtcd && stamped(s.EtcdBinDir(testRelease.Etcd), EtcdComponents) {
				t.Error("failed etcd build left a stamp")
			}
			if _, err := s.Binaries(testRelease); err == nil {
				t.Error("Binaries succeeded after a failed Ensure")
			}

			src.set(false, false)
			b, err := s.Ensure(context.Background(), testRelease, nil)
			if err != nil {
				t.Fatalf("retry Ensure: %v", err)
			}
			checkCalls(t, src, tt.afterRetry[0], tt.afterRetry[1])
			checkBinaries(t, s, b, testRelease)
			if !s.Installed(testRelease) {
				t.Error("Installed() = false after a successful retry")
			}
		})
	}
}

func TestStoreConcurrentEnsureBuildsOnce(t *testing.T) {
	src := &recordingSource{delay: 200 * time.Millisecond}
	dir := t.TempDir()
	const n = 3
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		// Separate Store values, like separate lotse processes.
		s := &Store{Dir: dir, Source: src}
		go func() {
			_, err := s.Ensure(context.Background(), testRelease, nil)
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Errorf("Ensure: %v", err)
		}
	}
	checkCalls(t, src, 1, 1)
}

func TestStoreEnsureHonoursContextWhileLocked(t *testing.T) {
	s := &Store{Dir: t.TempDir(), Source: &recordingSource{}}
	binDir := s.KubernetesBinDir(testRelease.Version)
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	unlock, err := fsutil.Lock(context.Background(), binDir+".lock")
	if err != nil {
		t.Fatalf("lock: %v", err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Ensure(ctx, testRelease, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ensure while another holds the lock = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Ensure took %s to give up", took)
	}
	checkCalls(t, s.Source.(*recordingSource), 0, 0)
}

func TestDefaultCacheDir(t *testing.T) {
	tests := []struct {
		lotse, xdg, home string
		want             string
	}{
		{"/x/lotse-cache", "/x/xdg", "/x/home", "/x/lotse-cache"},
		{"", "/x/xdg", "/x/home", "/x/xdg/lotse"},
		{"", "", "/x/home", "/x/home/.cache/lotse"},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Setenv("LOTSE_CACHE_DIR", tt.lotse)
			t.Setenv("XDG_CACHE_HOME", tt.xdg)
			t.Setenv("HOME", tt.home)
			if got := DefaultCacheDir(); got != tt.want {
				t.Errorf("DefaultCacheDir() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestStoreCloudController: Ensure builds the release's cloud controller
// manager under the source's digest and removes ones of other source; a
// release counts as installed without it.
func TestStoreCloudController(t *testing.T) {
	s := &Store{Dir: t.TempDir(), Source: &recordingSource{}}
	ctx := context.Background()
	stale := filepath.Join(s.Dir, "cloud-controller-manager", testRelease.Version+"-000000000000", "bin")
	staleWork := filepath.Join(s.Dir, "build", "cloud-controller-manager-"+testRelease.Version+"-000000000000")
	other := filepath.Join(s.Dir, "cloud-controller-manager", "1.0.0-000000000000", "bin")
	for _, d := range []string{stale, staleWork, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CloudController(testRelease); err == nil || !strings.Contains(err.Error(), "lotse release build") {
		t.Errorf("before a build: %v", err)
	}
	if _, err := s.Ensure(ctx, testRelease, nil); err != nil {
		t.Fatal(err)
	}
	path, err := s.CloudController(testRelease)
	if err != nil || path != filepath.Join(s.CloudControllerBinDir(testRelease.Version), CloudControllerComponents[0]) {
		t.Fatalf("CloudController = %s, %v", path, err)
	}
	for _, d := range []string{stale, staleWork} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s of other source is still there (%v)", d, err)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another release's build was removed: %v", err)
	}
	if _, ok := s.Dirs(testRelease)[s.CloudControllerBinDir(testRelease.Version)]; !ok {
		t.Error("Dirs leaves out the built cloud controller manager")
	}
	// Without it (a Lotse whose provider changed), the release is still
	// installed.
	if err := os.RemoveAll(filepath.Dir(s.CloudControllerBinDir(testRelease.Version))); err != nil {
		t.Fatal(err)
	}
	if !s.Installed(testRelease) {
		t.Error("a release without its cloud controller manager counts as not installed")
	}
}
