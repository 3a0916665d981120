package releases

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lotse/lotse/internal/cloudapi/ccm"
	"github.com/lotse/lotse/internal/fsutil"
)

// Store is the versioned cache of upstream binaries:
//
//	DIR/kubernetes/<version>/bin/<component>
//	DIR/etcd/<version>/bin/{etcd,etcdctl}
//	DIR/konnectivity/<version>/bin/{konnectivity-server,konnectivity-agent}
//	DIR/cloud-controller-manager/<version>-<source digest>/bin/lotse-cloud-controller-manager
//	DIR/build/...   work modules of the builder (kept so rebuilds are fast)
//
// A directory is complete only when its stamp file exists; a half-finished
// build is redone, never used.
type Store struct {
	Dir string
	// Source fills a missing release. Nil means build from the Go module proxy.
	Source Source
}

// Source produces the binaries of one release (Kubernetes or etcd) into binDir.
type Source interface {
	EnsureKubernetes(ctx context.Context, r Release, binDir string, log io.Writer) error
	EnsureEtcd(ctx context.Context, etcdVersion string, binDir string, log io.Writer) error
}

// KonnectivitySource produces the tunnel's binaries. Upstream publishes
// them only as container images, so unless the Source can do it too they are
// built from the Go module proxy, whichever Source a provider chose.
type KonnectivitySource interface {
	EnsureKonnectivity(ctx context.Context, version string, binDir string, log io.Writer) error
}

// CloudControllerSource builds lotse-cloud-controller-manager for a
// release. It is Lotse's own command (upstream's controllers with Lotse's
// provider), so no download offers it: unless the Source can build it
// too, it is built from the Go module proxy.
type CloudControllerSource interface {
	EnsureCloudController(ctx context.Context, r Release, binDir string, log io.Writer) error
}

const stampName = ".complete"

// DefaultCacheDir is $LOTSE_CACHE_DIR, else $XDG_CACHE_HOME/lotse, else ~/.cache/lotse.
func DefaultCacheDir() string {
	if d := os.Getenv("LOTSE_CACHE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "lotse")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "lotse-cache")
	}
	return filepath.Join(home, ".cache", "lotse")
}

// NewStore returns a store at dir that builds from the Go module proxy.
func NewStore(dir string) *Store { return &Store{Dir: dir} }

func (s *Store) source() Source {
	if s.Source != nil {
		return s.Source
	}
	return &ProxyBuilder{WorkDir: filepath.Join(s.Dir, "build")}
}

// KubernetesBinDir is where a release's Kubernetes binaries live.
func (s *Store) KubernetesBinDir(version string) string {
	return filepath.Join(s.Dir, "kubernetes", version, "bin")
}

func (s *Store) konnectivitySource() KonnectivitySource {
	if k, ok := s.Source.(KonnectivitySource); ok {
		return k
	}
	return &ProxyBuilder{WorkDir: filepath.Join(s.Dir, "build")}
}

// KonnectivityBinDir is where a konnectivity version's binaries live.
func (s *Store) KonnectivityBinDir(version string) string {
	return filepath.Join(s.Dir, "konnectivity", version, "bin")
}

func (s *Store) cloudControllerSource() CloudControllerSource {
	if c, ok := s.Source.(CloudControllerSource); ok {
		return c
	}
	return &ProxyBuilder{WorkDir: filepath.Join(s.Dir, "build")}
}

// CloudControllerBinDir is where a release's lotse-cloud-controller-manager
// lives. The directory names the digest of the command's source, so a
// Lotse whose provider changed builds its own.
func (s *Store) CloudControllerBinDir(version string) string {
	return filepath.Join(s.Dir, "cloud-controller-manager", version+"-"+ccm.SourceDigest(), "bin")
}

// Dirs are the directories of a release's binaries, each with the
// components it holds: what Installed requires, and the cloud controller
// manager's once it is built.
func (s *Store) Dirs(r Release) map[string][]string {
	dirs := map[string][]string{
		s.KubernetesBinDir(r.Version): Components,
		s.EtcdBinDir(r.Etcd):          EtcdComponents,
	}
	if r.Konnectivity != "" {
		dirs[s.KonnectivityBinDir(r.Konnectivity)] = KonnectivityComponents
	}
	if dir := s.CloudControllerBinDir(r.Version); stamped(dir, CloudControllerComponents) {
		dirs[dir] = CloudControllerComponents
	}
	return dirs
}

// CloudController returns the path of a release's
// lotse-cloud-controller-manager, or an error telling how to build it. A
// release counts as installed without it: nothing needs it yet, and its
// directory changes with Lotse's provider source.
func (s *Store) CloudController(r Release) (string, error) {
	dir := s.CloudControllerBinDir(r.Version)
	if !stamped(dir, CloudControllerComponents) {
		return "", fmt.Errorf("%s for kubernetes %s is not built yet in %s; run `lotse release build %s`", ccm.Binary, r.Version, s.Dir, r.Version)
	}
	return filepath.Join(dir, ccm.Binary), nil
}

// EtcdBinDir is where an etcd version's binaries live.
func (s *Store) EtcdBinDir(version string) string {
	return filepath.Join(s.Dir, "etcd", version, "bin")
}

// Binaries are the paths of one release's executables.
type Binaries struct {
	Release Release
	paths   map[string]string
}

// Path returns the executable of a component ("kube-apiserver", "etcd", ...).
func (b Binaries) Path(component string) string { return b.paths[component] }

// Installed reports whether a release is fully present in the cache.
func (s *Store) Installed(r Release) bool {
	for dir, components := range s.Dirs(r) {
		if !stamped(dir, components) {
			return false
		}
	}
	return true
}

// Binaries returns the paths of an installed release, or an error telling how
// to install it.
func (s *Store) Binaries(r Release) (Binaries, error) {
	if !s.Installed(r) {
		return Binaries{}, fmt.Errorf("kubernetes %s is not built yet in %s; run `lotse release build %s`", r.Version, s.Dir, r.Version)
	}
	return s.binaries(r), nil
}

func (s *Store) binaries(r Release) Binaries {
	b := Binaries{Release: r, paths: map[string]string{}}
	for dir, components := range s.Dirs(r) {
		for _, c := range components {
			b.paths[c] = filepath.Join(dir, c)
		}
	}
	return b
}

// Ensure makes a release present, building or downloading what is missing.
// It is idempotent and safe to call from several processes at once: a file
// lock serialises builds of the same directory.
func (s *Store) Ensure(ctx context.Context, r Release, log io.Writer) (Binaries, error) {
	if log == nil {
		log = io.Discard
	}
	if err := s.ensureDir(ctx, s.KubernetesBinDir(r.Version), Components, log, func(binDir string) error {
		return s.source().EnsureKubernetes(ctx, r, binDir, log)
	}); err != nil {
		return Binaries{}, fmt.Errorf("kubernetes %s: %w", r.Version, err)
	}
	if err := s.ensureDir(ctx, s.EtcdBinDir(r.Etcd), EtcdComponents, log, func(binDir string) error {
		return s.source().EnsureEtcd(ctx, r.Etcd, binDir, log)
	}); err != nil {
		return Binaries{}, fmt.Errorf("etcd %s: %w", r.Etcd, err)
	}
	if r.Konnectivity != "" {
		if err := s.ensureDir(ctx, s.KonnectivityBinDir(r.Konnectivity), KonnectivityComponents, log, func(binDir string) error {
			return s.konnectivitySource().EnsureKonnectivity(ctx, r.Konnectivity, binDir, log)
		}); err != nil {
			return Binaries{}, fmt.Errorf("konnectivity %s: %w", r.Konnectivity, err)
		}
	}
	if err := s.ensureDir(ctx, s.CloudControllerBinDir(r.Version), CloudControllerComponents, log, func(binDir string) error {
		return s.cloudControllerSource().EnsureCloudController(ctx, r, binDir, log)
	}); err != nil {
		return Binaries{}, fmt.Errorf("%s for kubernetes %s: %w", ccm.Binary, r.Version, err)
	}
	s.removeOtherCloudControllers(r.Version)
	return s.binaries(r), nil
}

// removeOtherCloudControllers removes the release's cloud controller
// managers built from other source (an earlier Lotse), and their work
// modules: each is a large binary, and nothing runs them.
func (s *Store) removeOtherCloudControllers(version string) {
	keep := filepath.Base(filepath.Dir(s.CloudControllerBinDir(version)))
	for _, pattern := range []string{
		filepath.Join(s.Dir, "cloud-controller-manager", version+"-*"),
		filepath.Join(s.Dir, "build", "cloud-controller-manager-"+version+"-*"),
	} {
		matches, _ := filepath.Glob(pattern)
		for _, m := range matches {
			if !strings.HasSuffix(filepath.Base(m), keep) && !strings.HasSuffix(m, ".lock") {
				_ = os.RemoveAll(m)
			}
		}
	}
}

func (s *Store) ensureDir(ctx context.Context, binDir string, components []string, log io.Writer, fill func(string) error) error {
	if stamped(binDir, components) {
		return nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	unlock, err := fsutil.Lock(ctx, binDir+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	if stamped(binDir, components) { // another process finished it while we waited
		return nil
	}
	start := time.Now()
	if err := fill(binDir); err != nil {
		return err
	}
	stamp, _ := json.Marshal(map[string]string{"completed": time.Now().UTC().Format(time.RFC3339), "took": time.Since(start).Round(time.Second).String()})
	return os.WriteFile(filepath.Join(binDir, stampName), stamp, 0o644)
}

// stamped reports whether binDir was filled completely with components: a
// cache filled before a component joined the list (etcdutl) is filled again.
func stamped(binDir string, components []string) bool {
	if _, err := os.Stat(filepath.Join(binDir, stampName)); err != nil {
		return false
	}
	for _, c := range components {
		if _, err := os.Stat(filepath.Join(binDir, c)); err != nil {
			return false
		}
	}
	return true
}
