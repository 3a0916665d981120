// Package cloudprovider is Lotse's provider for k8s.io/cloud-provider
// (named "lotse"): nodes get their machine's metadata (provider ID,
// addresses, zone, region, instance type), a stopped machine's node the
// shutdown taint and a deleted machine's node is removed, and Services of
// type LoadBalancer get an address and a balancer. It reaches the
// infrastructure only through the Machines and LoadBalancers interfaces:
// the local provider implements them (internal/cloudprovider/local), and
// an OpenStack or cloudscale provider could implement them as well.
package cloudprovider

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/lotse/lotse/internal/cloudapi/ccm/provider"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/servicelb"
)

// ProviderName is the provider's name, and the scheme of its provider IDs
// (the same as the cloud controller manager process's provider).
const ProviderName = provider.Name

// ProviderID is the provider ID of a machine: lotse://NAMESPACE/CLUSTER/MACHINE.
func ProviderID(cluster clusterref.Ref, machine string) string {
	return fmt.Sprintf("%s://%s/%s/%s", ProviderName, cluster.Namespace, cluster.Name, machine)
}

// Machine is what the infrastructure knows of the machine behind a node.
type Machine struct {
	Name         string
	ProviderID   string
	Address      string
	InstanceType string
	Zone, Region string
	// Shutdown: the machine exists but is stopped.
	Shutdown bool
}

// Machines finds the machines of a cluster.
type Machines interface {
	// Machine returns the machine behind a node, found by its provider ID
	// or else its name; nil when there is none (any more).
	Machine(ctx context.Context, cluster clusterref.Ref, nodeName, providerID string) (*Machine, error)
}

// LoadBalancer is what one Service asks of the infrastructure.
type LoadBalancer struct {
	Cluster clusterref.Ref
	// Name is unique in the cluster (cloud-provider's name for the Service).
	Name string
	// Internal: an address on the cluster's node network instead of the
	// public pool.
	Internal  bool
	Listeners []servicelb.Listener
}

// ErrPoolExhausted says no address is left for a load balancer.
var ErrPoolExhausted = errors.New("address pool exhausted")

// LoadBalancers runs balancers.
type LoadBalancers interface {
	// Ensure creates or updates a balancer in place and returns its
	// address (the same for the balancer's whole life).
	Ensure(ctx context.Context, lb LoadBalancer) (string, error)
	// Get returns a balancer's address, if it exists.
	Get(ctx context.Context, cluster clusterref.Ref, name string) (string, bool, error)
	// Delete removes a balancer and releases its address.
	Delete(ctx context.Context, cluster clusterref.Ref, name string) error
	// DeleteCluster removes every balancer of a deleted cluster.
	DeleteCluster(ctx context.Context, cluster clusterref.Ref) error
}

// Cloud is the provider of one cluster.
type Cloud struct {
	Cluster       clusterref.Ref
	Machines      Machines
	LoadBalancers LoadBalancers
	// Region is the cluster's region, for machines whose pool has none.
	Region string
}

var _ cloudprovider.Interface = (*Cloud)(nil)

// Initialize is part of cloudprovider.Interface; there is nothing to set up.
func (c *Cloud) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}

// LoadBalancer is the Service balancers.
func (c *Cloud) LoadBalancer() (cloudprovider.LoadBalancer, bool) {
	return &loadBalancers{cloud: c}, true
}

// Instances is the old instances API; InstancesV2 replaces it.
func (c *Cloud) Instances() (cloudprovider.Instances, bool) { return nil, false }

// InstancesV2 is the node metadata.
func (c *Cloud) InstancesV2() (cloudprovider.InstancesV2, bool) { return &instances{cloud: c}, true }

// Zones is superseded by InstancesV2's metadata.
func (c *Cloud) Zones() (cloudprovider.Zones, bool) { return nil, false }

// Clusters is not offered.
func (c *Cloud) Clusters() (cloudprovider.Clusters, bool) { return nil, false }

// Routes are not needed: Lotse routes pod ranges itself.
func (c *Cloud) Routes() (cloudprovider.Routes, bool) { return nil, false }

// ProviderName is "lotse".
func (c *Cloud) ProviderName() string { return ProviderName }

// HasClusterID: every cluster has its own provider instance.
func (c *Cloud) HasClusterID() bool { return true }

type instances struct{ cloud *Cloud }

func (i *instances) machine(ctx context.Context, node *corev1.Node) (*Machine, error) {
	return i.cloud.Machines.Machine(ctx, i.cloud.Cluster, node.Name, node.Spec.ProviderID)
}

// InstanceExists: the node's machine exists.
func (i *instances) InstanceExists(ctx context.Context, node *corev1.Node) (bool, error) {
	m, err := i.machine(ctx, node)
	return m != nil, err
}

// InstanceShutdown: the node's machine exists but is stopped.
func (i *instances) InstanceShutdown(ctx context.Context, node *corev1.Node) (bool, error) {
	m, err := i.machine(ctx, node)
	return m != nil && m.Shutdown, err
}

// InstanceMetadata describes the node's machine.
func (i *instances) InstanceMetadata(ctx context.Context, node *corev1.Node) (*cloudprovider.InstanceMetadata, error) {
	m, err := i.machine(ctx, node)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, cloudprovider.InstanceNotFound
	}
	return i.cloud.Metadata(m, node.Name), nil
}

// Metadata is what a node learns of its machine m: the cluster's region
// stands in for a machine whose pool has none.
func (c *Cloud) Metadata(m *Machine, nodeName string) *cloudprovider.InstanceMetadata {
	region := m.Region
	if region == "" {
		region = c.Region
	}
	return &cloudprovider.InstanceMetadata{
		ProviderID:   m.ProviderID,
		InstanceType: m.InstanceType,
		NodeAddresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: m.Address},
			{Type: corev1.NodeHostName, Address: nodeName},
		},
		Zone:   m.Zone,
		Region: region,
	}
}
