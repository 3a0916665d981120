// Package releases is the catalog of Kubernetes versions Lotse supports and
// the place their upstream binaries come from: built from the Go module proxy
// into a versioned cache, or (for providers with internet) downloaded and
// checked against SHA-256 digests.
package releases

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lotse/lotse/internal/cloudapi/ccm"
)

// Components every release provides, in the order they are built. kube-apiserver
// goes first because it is by far the largest build and warms the cache for the rest.
var Components = []string{
	"kube-apiserver",
	"kube-controller-manager",
	"kube-scheduler",
	"kubelet",
	"kube-proxy",
	"kubectl",
}

// EtcdComponents are the binaries built from the etcd modules.
var EtcdComponents = []string{"etcd", "etcdctl", "etcdutl"}

// KonnectivityComponents are the tunnel's binaries, built from
// sigs.k8s.io/apiserver-network-proxy: the server runs beside each
// kube-apiserver, the agent inside the tenant cluster (as an image).
var KonnectivityComponents = []string{"konnectivity-server", "konnectivity-agent"}

// CloudControllerComponents is Lotse's cloud controller manager, built
// per release against that release's k8s.io/cloud-provider.
var CloudControllerComponents = []string{ccm.Binary}

// Release is one supported Kubernetes version and the etcd that goes with it.
type Release struct {
	// Version is the Kubernetes version without a leading "v", e.g. "1.36.3".
	Version string
	// Etcd is the etcd server version used for this release's control planes.
	Etcd string
	// Konnectivity is the apiserver-network-proxy version of the tunnel
	// between the hosted API servers and the cluster's network.
	Konnectivity string
	// Classification says whether clusters may still use the release, as
	// Gardener classifies its versions: supported, deprecated (works, but
	// moves to expired on ExpirationDate) or expired (no new cluster and no
	// update may choose it; maintenance moves clusters off it).
	Classification Classification
	// ExpirationDate is the day ("2027-02-28", UTC) from which the release
	// counts as expired; empty for a release without a planned end.
	ExpirationDate string
	// Digests optionally pins the SHA-256 of each official binary (by component
	// name). A provider that downloads binaries instead of building them sets
	// these; Verify refuses a binary whose digest differs.
	Digests map[string]string
}

// Classification of a release.
type Classification string

// Classifications, in the order a release passes through them.
const (
	Supported  Classification = "supported"
	Deprecated Classification = "deprecated"
	Expired    Classification = "expired"
)

// catalog lists the releases, newest first: the newest patch of each of the
// three newest minors (etcd: the newest patch of the minor that release's
// kubeadm pins). The CRD's rule for spec.kubernetes.version lists the
// versions that are not expired (see api/v1alpha1); a unit test keeps them
// in sync. Expiration dates follow the end of upstream's patch support.
var catalog = []Release{
	{Version: "1.37.2", Etcd: "3.7.3", Konnectivity: "0.34.0", Classification: Supported},
	{Version: "1.36.3", Etcd: "3.6.16", Konnectivity: "0.34.0", Classification: Supported},
	{Version: "1.35.4", Etcd: "3.6.16", Konnectivity: "0.34.0", Classification: Deprecated, ExpirationDate: "2027-02-28"},
}

// All returns the catalog, newest first.
func All() []Release {
	out := make([]Release, len(catalog))
	copy(out, catalog)
	return out
}

// Default is the release used when a Cluster does not name one: the newest.
func Default() Release { return catalog[0] }

// Expiration returns the day the release expires, if it has one.
func (r Release) Expiration() (time.Time, bool) {
	if r.ExpirationDate == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.DateOnly, r.ExpirationDate)
	return t, err == nil
}

// ClassificationAt is the release's classification at now: an expiration
// date that has come makes it expired whatever the catalog says.
func (r Release) ClassificationAt(now time.Time) Classification {
	if exp, ok := r.Expiration(); ok && !now.Before(exp) {
		return Expired
	}
	return r.Classification
}

// Selectable lists the versions a new cluster or an update may choose
// (those not classified expired in the catalog), newest first; the CRD's
// rule allows exactly these.
func Selectable() []string {
	var vs []string
	for _, r := range catalog {
		if r.Classification != Expired {
			vs = append(vs, r.Version)
		}
	}
	return vs
}

// Catalog is a list of releases, newest first. The package's functions
// work on the built-in one (DefaultCatalog); controllers take a Catalog so
// that tests can give them another (a release that has expired, say).
type Catalog []Release

// DefaultCatalog is the built-in catalog.
func DefaultCatalog() Catalog { return Catalog(All()) }

// CheckTarget says whether a cluster at from (empty: a new cluster) may be
// set to version to at now, by the built-in catalog.
func CheckTarget(from, to string, now time.Time) error {
	return DefaultCatalog().CheckTarget(from, to, now)
}

// LatestPatch returns the built-in catalog's newest release of v's minor.
func LatestPatch(v string) (Release, bool) { return DefaultCatalog().LatestPatch(v) }

// NextSupported is DefaultCatalog().NextSupported.
func NextSupported(v string, now time.Time) (Release, bool) {
	return DefaultCatalog().NextSupported(v, now)
}

// Lookup finds a release of the built-in catalog by version ("1.36.3" or "v1.36.3").
func Lookup(version string) (Release, error) { return DefaultCatalog().Lookup(version) }

// Versions lists the built-in catalog's versions, newest first.
func Versions() []string { return DefaultCatalog().Versions() }

// CheckTarget says whether a cluster at from (empty: a new cluster) may be
// set to version to at now: to must be in the catalog and not expired, and
// an upgrade goes one minor at a time, never down. The schema's rules say
// the same; this catches what only time changes (an expiration date that
// came after the schema was generated).
func (c Catalog) CheckTarget(from, to string, now time.Time) error {
	r, err := c.Lookup(to)
	if err != nil {
		return err
	}
	if from != "" && strings.TrimPrefix(from, "v") == r.Version {
		return nil // staying on a version is always allowed
	}
	if r.ClassificationAt(now) == Expired {
		return fmt.Errorf("kubernetes %s expired on %s; choose a supported version: %s", r.Version, r.ExpirationDate,
			strings.Join(c.supportedAt(now), ", "))
	}
	if from == "" {
		return nil
	}
	f, err := ParseVersion(from)
	if err != nil {
		return err
	}
	t, _ := ParseVersion(r.Version)
	switch {
	case t.Less(f):
		return fmt.Errorf("downgrade from %s to %s is not supported", from, r.Version)
	case t.Major != f.Major || t.Minor > f.Minor+1:
		return fmt.Errorf("an upgrade from %s to %s skips a minor version; upgrade to 1.%d first", from, r.Version, f.Minor+1)
	}
	return nil
}

func (c Catalog) supportedAt(now time.Time) []string {
	var vs []string
	for _, r := range c {
		if r.ClassificationAt(now) != Expired {
			vs = append(vs, r.Version)
		}
	}
	return vs
}

// LatestPatch returns the newest release of v's minor, if the catalog has
// one: the target of an automatic patch update.
func (c Catalog) LatestPatch(v string) (Release, bool) {
	pv, err := ParseVersion(v)
	if err != nil {
		return Release{}, false
	}
	for _, r := range c { // newest first
		if rv, _ := ParseVersion(r.Version); rv.Major == pv.Major && rv.Minor == pv.Minor {
			return r, true
		}
	}
	return Release{}, false
}

// NextSupported returns where a cluster on v goes when v has expired: the
// newest patch of v's minor if that one is not expired, else the newest
// patch of the next minor (one minor at a time) that is not.
func (c Catalog) NextSupported(v string, now time.Time) (Release, bool) {
	pv, err := ParseVersion(v)
	if err != nil {
		return Release{}, false
	}
	for _, minor := range []int{pv.Minor, pv.Minor + 1} {
		r, ok := c.LatestPatch(fmt.Sprintf("%d.%d.0", pv.Major, minor))
		if ok && r.ClassificationAt(now) != Expired && !mustParse(r.Version).Less(pv) {
			return r, true
		}
	}
	return Release{}, false
}

func mustParse(v string) Version {
	pv, _ := ParseVersion(v)
	return pv
}

// Lookup finds a release by version ("1.36.3" or "v1.36.3").
func (c Catalog) Lookup(version string) (Release, error) {
	v := strings.TrimPrefix(version, "v")
	for _, r := range c {
		if r.Version == v {
			return r, nil
		}
	}
	return Release{}, fmt.Errorf("kubernetes version %q is not in the catalog; supported versions: %s (see `lotse release list`)",
		version, strings.Join(c.Versions(), ", "))
}

// Versions lists the catalog's versions, newest first.
func (c Catalog) Versions() []string {
	vs := make([]string, 0, len(c))
	for _, r := range c {
		vs = append(vs, r.Version)
	}
	return vs
}

// Minor returns the minor number of a "1.N.P" version.
func (r Release) Minor() int {
	v, _ := ParseVersion(r.Version)
	return v.Minor
}

// Version is a parsed "MAJOR.MINOR.PATCH".
type Version struct{ Major, Minor, Patch int }

// ParseVersion parses "1.36.3" or "v1.36.3".
func ParseVersion(s string) (Version, error) {
	parts := strings.Split(strings.TrimPrefix(s, "v"), ".")
	if len(parts) != 3 {
		return Version{}, fmt.Errorf("version %q is not of the form MAJOR.MINOR.PATCH", s)
	}
	var nums [3]int
	for i, p := range parts {
		// Plain decimal numbers only: no sign, no leading zeros.
		if p == "" || strings.Trim(p, "0123456789") != "" || (len(p) > 1 && p[0] == '0') {
			return Version{}, fmt.Errorf("version %q is not of the form MAJOR.MINOR.PATCH", s)
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return Version{}, fmt.Errorf("version %q is not of the form MAJOR.MINOR.PATCH", s)
		}
		nums[i] = n
	}
	return Version{nums[0], nums[1], nums[2]}, nil
}

// Less orders versions.
func (v Version) Less(o Version) bool {
	if v.Major != o.Major {
		return v.Major < o.Major
	}
	if v.Minor != o.Minor {
		return v.Minor < o.Minor
	}
	return v.Patch < o.Patch
}

// SortNewestFirst sorts version strings, newest first; unparsable ones go last.
func SortNewestFirst(vs []string) {
	sort.SliceStable(vs, func(i, j int) bool {
		a, errA := ParseVersion(vs[i])
		b, errB := ParseVersion(vs[j])
		if errA != nil || errB != nil {
			return errA == nil
		}
		return b.Less(a)
	})
}
