// Package releasestest gives tests the binaries of the default release
// from the release cache, which `make test` builds before the unit tests.
package releasestest

import (
	"os"
	"testing"

	"github.com/lotse/lotse/internal/releases"
)

// Binaries returns the default release's binaries. Without them a test
// fails in CI (they must have been built) and is skipped elsewhere.
func Binaries(t testing.TB) releases.Binaries {
	t.Helper()
	bins, err := releases.NewStore(releases.DefaultCacheDir()).Binaries(releases.Default())
	needBuilt(t, err)
	return bins
}

// CloudController returns the default release's
// lotse-cloud-controller-manager; like Binaries, it fails in CI and skips
// elsewhere when it is not built.
func CloudController(t testing.TB) string {
	t.Helper()
	path, err := releases.NewStore(releases.DefaultCacheDir()).CloudController(releases.Default())
	needBuilt(t, err)
	return path
}

// needBuilt fails the test in CI and skips it elsewhere when what it needs
// is not built (err).
func needBuilt(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("the release must be built before the unit tests: %v", err)
	}
	t.Skipf("needs the default release built (make releases): %v", err)
}
