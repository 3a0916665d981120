// Package machine is the seam between Lotse's controllers and whatever makes
// machines: a Provider creates and deletes the machines of a cluster's
// worker pools and owns the network they live on (bridge, addresses,
// routes, firewall). Controllers decide what machines a cluster needs;
// providers decide how they come to be. local/ implements it with network
// namespaces on this host.
package machine

import (
	"context"

	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/releases"
)

// Provider makes machines and their network.
type Provider interface {
	// EnsureNetwork creates (or repairs) the network of a cluster's
	// machines and isolates it from the host and other clusters.
	EnsureNetwork(ctx context.Context, cluster clusterref.Ref, spec NetworkSpec) error
	// RoutePodRange makes machine index send podCIDR to via (the node that
	// owns that range), as a cloud's route controller does. A machine that
	// does not exist (yet or any more) is skipped.
	RoutePodRange(ctx context.Context, cluster clusterref.Ref, index int, podCIDR, via string) error
	// DeleteNetwork removes everything of a cluster's machines that is
	// still on the host, whatever state their objects are in, and then the
	// network itself.
	DeleteNetwork(ctx context.Context, cluster clusterref.Ref) error
	// Ensure creates or repairs a machine. It is idempotent.
	Ensure(ctx context.Context, spec *Spec) (Status, error)
	// Stop ends every process and container of a machine and keeps its
	// disk and network, so that Ensure starts it again as it was. It needs
	// only the cluster, the nodes CIDR, the name and the index of spec.
	Stop(ctx context.Context, spec *Spec) error
	// Delete stops a machine and removes everything of it. It needs only
	// the cluster, the name and the index of spec.
	Delete(ctx context.Context, spec *Spec) error
}

// NetworkSpec is what a cluster's machine network must provide.
type NetworkSpec struct {
	// CIDR is the machines' network; its first address is the gateway
	// where the control plane's node endpoints listen.
	CIDR string
	// GatewayPorts are the TCP ports machines may reach on the gateway
	// (the API endpoint and the tunnel endpoint).
	GatewayPorts []int
	// Pods and Services are the cluster's ranges; nothing outside the
	// cluster routes them.
	Pods, Services string
}

// Taint is a node taint.
type Taint struct{ Key, Value, Effect string }

// Spec is one machine as the controllers want it.
type Spec struct {
	Cluster clusterref.Ref
	// Name is the machine's and the node's name.
	Name string
	// Index is unique among the cluster's machines (addresses, names).
	Index int
	// NodesCIDR is the network of the cluster's machines.
	NodesCIDR string
	Binaries  releases.Binaries
	// PKI of the cluster: its CA and the kube-proxy client certificate.
	PKI pki.ClusterPKI
	// APIServer is the URL nodes use (the gateway endpoint).
	APIServer string
	// BootstrapToken ("id.secret") lets the kubelet ask for its certificate.
	BootstrapToken string
	ClusterDNS     string
	ClusterCIDR    string
	ServiceCIDR    string
	// Egress lets the machine and its pods reach networks outside the
	// cluster; without it such traffic is rejected inside the machine.
	Egress bool
	// BridgeCNI: the provider configures Lotse's routed bridge as the pod
	// network; otherwise a plugin running in the cluster (Cilium, Calico)
	// installs its own.
	BridgeCNI bool
	// PodCIDR is the node's pod range once the controller-manager assigned it.
	PodCIDR    string
	Labels     map[string]string
	Taints     []Taint
	PauseImage string
	// Images are image tarballs to load into the machine.
	Images []string
	// Class is the machine's size (zero: the host's).
	Class Class
}

// Status of a machine as the provider sees it.
type Status struct {
	Address        string
	ProviderID     string
	ProcessesReady bool
	Message        string
	// HasServingCertificate: the kubelet serves with a certificate of the
	// cluster's CA (exec, logs and metrics need it).
	HasServingCertificate bool
	// TrustDigest names the cluster trust (CA bundle, signing CA) the
	// node's kubelet and kube-proxy run with (pki.NodeTrustDigest); a CA
	// rotation moves on once every node runs with the current one.
	TrustDigest string
	// LocalVolumesPath is where node-local volumes live on the machine:
	// on its own disk, so they go away with the machine.
	LocalVolumesPath string
}
