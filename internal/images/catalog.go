// Package images builds the OCI images a node's containerd needs, offline:
// no Docker, no registry. Each image is built from source that comes through
// the Go module proxy (the pause container's C source from the
// k8s.io/kubernetes module, CoreDNS from github.com/coredns/coredns) or from a
// local static binary, written as a docker-save tarball, and imported into
// containerd with `ctr images import` (see Import), or pushed to a real
// registry for nodes that pull (see Repository).
//
// Image references use the host Registry, which never resolves: nothing is
// ever pulled by those names, so kubelet must run these images with
// imagePullPolicy IfNotPresent (or Never) after they were imported.
package images

import (
	"fmt"
	"sort"
	"strings"

	"github.com/lotse/lotse/internal/releases"
)

// Registry is the host part of every image reference. It is a name only: no
// registry listens there and nothing is ever pulled from it.
const Registry = "registry.lotse.local"

// Names of the images built from upstream source.
const (
	PauseName   = "pause"
	CoreDNSName = "coredns"
)

// Kind says how an image is built.
type Kind string

const (
	// KindPause compiles build/pause/linux/pause.c of the k8s.io/kubernetes
	// module with gcc, statically.
	KindPause Kind = "pause"
	// KindCoreDNS builds CoreDNS from the Go module proxy with only the
	// plugins a cluster DNS needs (CoreDNSPlugins).
	KindCoreDNS Kind = "coredns"
	// KindBinary wraps a local static binary (see FromBinary).
	KindBinary Kind = "binary"
	// KindGoModule builds a main package of a module from the Go module
	// proxy, statically (see FromGoModule).
	KindGoModule Kind = "gomodule"
)

// Image is one image to build.
type Image struct {
	// Name is the repository name under Registry, e.g. "pause".
	Name string
	// Tag is the image tag, e.g. "3.10.2".
	Tag  string
	Kind Kind
	// Source is the module version the image is built from: the
	// k8s.io/kubernetes version ("v1.36.3") for KindPause, the
	// github.com/coredns/coredns version ("v1.14.2") for KindCoreDNS.
	// Unused for KindBinary.
	Source string
	// Binary is the local executable of a KindBinary image.
	Binary string
	// Entrypoint of the image config. The image's single file (the compiled
	// or given binary) is stored at Entrypoint[0].
	Entrypoint []string
	// User optionally sets the config's user, e.g. "65535:65535".
	User string
	// Module and Package are the module path and the main package a
	// KindGoModule image is built from (Source is the module version).
	Module, Package string
	// HostFiles are host programs and directories the binary needs at run
	// time (iptables, ipset), stored at the same paths in a layer of their
	// own with everything they load (see collectHostFiles).
	HostFiles []string
	// Env is added to the image config's environment (beside PATH).
	Env []string
	// Links are symlinks to add (path in the image -> target), e.g. a
	// multi-call binary's applet names.
	Links map[string]string
}

// Ref is the full image reference, e.g. "registry.lotse.local/pause:3.10.2".
func (i Image) Ref() string { return Ref(i.Name, i.Tag) }

// String is the reference.
func (i Image) String() string { return i.Ref() }

// Ref returns the reference of image name at tag.
func Ref(name, tag string) string { return Registry + "/" + name + ":" + tag }

// PauseRef is the reference of the pause image at tag.
func PauseRef(tag string) string { return Ref(PauseName, tag) }

// CoreDNSRef is the reference of the CoreDNS image at tag.
func CoreDNSRef(tag string) string { return Ref(CoreDNSName, tag) }

// Pause is the pause image at tag, compiled from the pause.c of the
// k8s.io/kubernetes module at kubernetesVersion. Like the upstream image it
// runs as 65535:65535.
func Pause(tag, kubernetesVersion string) Image {
	return Image{
		Name:       PauseName,
		Tag:        tag,
		Kind:       KindPause,
		Source:     "v" + strings.TrimPrefix(kubernetesVersion, "v"),
		Entrypoint: []string{"/pause"},
		User:       "65535:65535",
	}
}

// CoreDNS is the CoreDNS image built from github.com/coredns/coredns at
// version ("v1.14.2"); the tag is the version, as upstream tags it.
func CoreDNS(version string) Image {
	v := "v" + strings.TrimPrefix(version, "v")
	return Image{
		Name:       CoreDNSName,
		Tag:        v,
		Kind:       KindCoreDNS,
		Source:     v,
		Entrypoint: []string{"/coredns"},
	}
}

// FromBinary is an image made of one local static binary. The binary is
// stored at entrypoint[0], which must be an absolute path; with no
// entrypoint it is stored at /<name> and that is the entrypoint.
func FromBinary(name, tag, binaryPath string, entrypoint []string) Image {
	if len(entrypoint) == 0 {
		entrypoint = []string{"/" + name}
	}
	return Image{
		Name:       name,
		Tag:        tag,
		Kind:       KindBinary,
		Binary:     binaryPath,
		Entrypoint: append([]string(nil), entrypoint...),
	}
}

// FromGoModule is an image of the main package pkg of module at version,
// built statically from the Go module proxy; the binary is stored at
// /<name> and is the entrypoint. hostFiles are added as described at
// Image.HostFiles.
func FromGoModule(name, tag, module, version, pkg string, hostFiles ...string) Image {
	return Image{
		Name:       name,
		Tag:        tag,
		Kind:       KindGoModule,
		Module:     module,
		Source:     version,
		Package:    pkg,
		Entrypoint: []string{"/" + name},
		HostFiles:  hostFiles,
	}
}

// KonnectivityAgentName is the image of the tunnel's agent.
const KonnectivityAgentName = "konnectivity-agent"

// KonnectivityAgent is the tunnel agent's image, made of the agent binary
// built for konnectivity version ("0.34.0"); the tag is "v" + version, as
// upstream tags it.
func KonnectivityAgent(version, binary string) Image {
	return FromBinary(KonnectivityAgentName, "v"+strings.TrimPrefix(version, "v"), binary, []string{"/proxy-agent"})
}

// Images of the node agents Lotse manages, the same for every release.
const (
	KubeRouterName    = "kube-router"
	KubeRouterVersion = "v2.1.0"
)

// KubeRouter is the network policy agent's image: kube-router (its
// firewall part) with the host's iptables and ipset, which it executes to
// program the node. iptables is whichever variant the host's alternatives
// select (nft on Debian 12), the one kube-proxy on the nodes uses too.
func KubeRouter() Image {
	return FromGoModule(KubeRouterName, KubeRouterVersion, "github.com/cloudnativelabs/kube-router/v2", KubeRouterVersion,
		"github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
		"/usr/sbin/iptables", "/usr/sbin/iptables-save", "/usr/sbin/iptables-restore", "/usr/sbin/ipset",
		"/usr/lib/x86_64-linux-gnu/xtables")
}

// Storage: rancher's local-path-provisioner and the image of its helper
// pods, which create and remove the volume directories with the setup and
// teardown scripts Lotse gives it (/bin/sh is Debian's static busybox).
const (
	LocalPathProvisionerName    = "local-path-provisioner"
	LocalPathProvisionerVersion = "v0.0.30"
	LocalPathHelperName         = "local-path-helper"
	// busyboxBinary is the static busybox of Debian's busybox-static.
	busyboxBinary = "/bin/busybox"
)

// LocalPathProvisioner is the dynamic node-local volume provisioner.
func LocalPathProvisioner() Image {
	return FromGoModule(LocalPathProvisionerName, LocalPathProvisionerVersion, "github.com/rancher/local-path-provisioner",
		LocalPathProvisionerVersion, "github.com/rancher/local-path-provisioner")
}

// LocalPathHelper is the helper pods' image: busybox as /bin/sh (its
// applets run without links of their own).
func LocalPathHelper() Image {
	img := FromBinary(LocalPathHelperName, "busybox", busyboxBinary, []string{"/bin/busybox"})
	img.Links = map[string]string{"/bin/sh": "busybox"}
	return img
}

// metrics-server serves the resource metrics API.
const (
	MetricsServerName    = "metrics-server"
	MetricsServerVersion = "v0.8.0"
)

// MetricsServer is metrics-server built from its module.
func MetricsServer() Image {
	return FromGoModule(MetricsServerName, MetricsServerVersion, "sigs.k8s.io/metrics-server", MetricsServerVersion,
		"sigs.k8s.io/metrics-server/cmd/metrics-server")
}

// NodeAgents are the images of the node agents and addons that are the
// same for every release, loaded on every node.
func NodeAgents() []Image {
	return []Image{KubeRouter(), LocalPathProvisioner(), LocalPathHelper(), MetricsServer()}
}

// Set is the images a node of one Kubernetes release needs.
type Set struct {
	// Pause is containerd's sandbox image (CRI sandbox_image).
	Pause Image
	// CoreDNS is the cluster DNS addon's image.
	CoreDNS Image
}

// All lists the set's images, pause first.
func (s Set) All() []Image { return []Image{s.Pause, s.CoreDNS} }

// Refs lists the set's image references, pause first.
func (s Set) Refs() []string { return []string{s.Pause.Ref(), s.CoreDNS.Ref()} }

// releaseImages are the image versions of one Kubernetes minor. They are the
// ones kubeadm of that release deploys: PauseVersion and CoreDNSVersion in
// cmd/kubeadm/app/constants/constants.go of the k8s.io/kubernetes module.
type releaseImages struct {
	minor int
	// pause is the pause tag; pauseFrom is the k8s.io/kubernetes version
	// whose build/pause/linux/pause.c is compiled for it. The tag is keyed by
	// pause version only (the cache file is pause-<tag>.tar), so each tag is
	// built from exactly one Kubernetes version.
	pause, pauseFrom string
	// coredns is the github.com/coredns/coredns module version.
	coredns string
}

// imageCatalog must have an entry for the minor of every release in
// releases.All(); a unit test enforces it.
var imageCatalog = []releaseImages{
	// kubeadm v1.37.2: PauseVersion "3.10.2" (built from the same source
	// as for 1.36), CoreDNSVersion "v1.14.6".
	{minor: 37, pause: "3.10.2", pauseFrom: "v1.36.3", coredns: "v1.14.6"},
	// kubeadm v1.36.3: PauseVersion "3.10.2", CoreDNSVersion "v1.14.2".
	{minor: 36, pause: "3.10.2", pauseFrom: "v1.36.3", coredns: "v1.14.2"},
	// kubeadm v1.35.4: PauseVersion "3.10.1", CoreDNSVersion "v1.13.1".
	{minor: 35, pause: "3.10.1", pauseFrom: "v1.35.4", coredns: "v1.13.1"},
}

// Lookup returns the images a node of Kubernetes k8sVersion ("1.36.3" or
// "v1.36.3") needs, or an error if its minor is not in the image catalog.
func Lookup(k8sVersion string) (Set, error) {
	v, err := releases.ParseVersion(k8sVersion)
	if err != nil {
		return Set{}, err
	}
	for _, r := range imageCatalog {
		if v.Major == 1 && v.Minor == r.minor {
			return Set{Pause: Pause(r.pause, r.pauseFrom), CoreDNS: CoreDNS(r.coredns)}, nil
		}
	}
	var known []string
	for _, r := range imageCatalog {
		known = append(known, fmt.Sprintf("1.%d", r.minor))
	}
	sort.Strings(known)
	return Set{}, fmt.Errorf("no node images known for kubernetes %s; known minors: %s", k8sVersion, strings.Join(known, ", "))
}

// ForRelease returns the images a node of Kubernetes k8sVersion needs: those
// of its minor, so every release of the release catalog (releases.All) has
// them. For a version of an unknown minor, or not a version at all, it
// returns the zero Set, whose images have no name and fail to build; use
// Lookup to get an error instead.
func ForRelease(k8sVersion string) Set {
	s, err := Lookup(k8sVersion)
	if err != nil {
		return Set{}
	}
	return s
}

// PreviousMinor returns the images of the minor before k8sVersion's, if the
// image catalog has it. A node loads its CoreDNS image too: during an
// upgrade the cluster's DNS keeps the old version until the last node of
// the old version has gone (see the cluster controller's addonVersion).
func PreviousMinor(k8sVersion string) (Set, bool) {
	v, err := releases.ParseVersion(k8sVersion)
	if err != nil || v.Minor == 0 {
		return Set{}, false
	}
	s, err := Lookup(fmt.Sprintf("%d.%d.0", v.Major, v.Minor-1))
	return s, err == nil
}

// ManagerName is the image of the manager installed in a cluster.
const ManagerName = "lotse-manager"

// ManagerBinary is where the manager's image has lotse.
const ManagerBinary = "/usr/local/bin/lotse"

// DataSwapName is the image of the pods that swap an etcd member's data
// on a seed's volume in a restore: lotse alone.
const DataSwapName = "lotse-data-swap"

// Manager is the image of a manager that runs in a cluster: the static
// lotse binary as the entrypoint, with the release directories of
// cacheDir at the same paths and LOTSE_CACHE_DIR naming it, so the
// manager finds its releases built and the seed-hosted control planes
// run the same image.
func Manager(tag, lotseBinary, cacheDir string, releaseDirs []string) Image {
	img := FromBinary(ManagerName, tag, lotseBinary, []string{ManagerBinary})
	img.HostFiles = append([]string(nil), releaseDirs...)
	img.Env = []string{"LOTSE_CACHE_DIR=" + cacheDir}
	return img
}
