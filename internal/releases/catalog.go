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
var EtcdComponents = []string{"etcd", "etcdctl"}

// KonnectivityComponents are the tunnel's binaries, built from
// sigs.k8s.io/apiserver-network-proxy: the server runs beside each
// kube-apiserver, the agent inside the tenant cluster (as an image).
var KonnectivityComponents = []string{"konnectivity-server", "konnectivity-agent"}

// Release is one supported Kubernetes version and the etcd that goes with it.
type Release struct {
	// Version is the Kubernetes version without a leading "v", e.g. "1.36.3".
	Version string
	// Etcd is the etcd server version used for this release's control planes.
	Etcd string
	// Konnectivity is the apiserver-network-proxy version of the tunnel
	// between the hosted API servers and the cluster's network.
	Konnectivity string
	// Digests optionally pins the SHA-256 of each official binary (by component
	// name). A provider that downloads binaries instead of building them sets
	// these; Verify refuses a binary whose digest differs.
	Digests map[string]string
}

// catalog lists the supported releases, newest first. Keep it to the newest
// patch of each supported minor; the CRD's enum for spec.kubernetes.version is
// generated from this list (see api/v1alpha1) and a unit test keeps them in sync.
var catalog = []Release{
	{Version: "1.36.3", Etcd: "3.6.16", Konnectivity: "0.34.0"},
	{Version: "1.35.4", Etcd: "3.6.16", Konnectivity: "0.34.0"},
}

// All returns the catalog, newest first.
func All() []Release {
	out := make([]Release, len(catalog))
	copy(out, catalog)
	return out
}

// Default is the release used when a Cluster does not name one: the newest.
func Default() Release { return catalog[0] }

// Lookup finds a release by version ("1.36.3" or "v1.36.3").
func Lookup(version string) (Release, error) {
	v := strings.TrimPrefix(version, "v")
	for _, r := range catalog {
		if r.Version == v {
			return r, nil
		}
	}
	return Release{}, fmt.Errorf("kubernetes version %q is not in the catalog; supported versions: %s (see `lotse release list`)",
		version, strings.Join(Versions(), ", "))
}

// Versions lists the catalog's versions, newest first.
func Versions() []string {
	vs := make([]string, 0, len(catalog))
	for _, r := range catalog {
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
