// Package local is the cloud of Lotse's local machines: it answers the
// cloud provider's questions about machines from the management API and
// runs the balancers of LoadBalancer Services on this host, as supervised
// `lotse service-lb` processes with addresses from a public pool (on the
// host's loopback) or from the cluster's node network.
package local

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/cloudprovider"
	"github.com/lotse/lotse/internal/clusterref"
)

// Machines reads the Machines of a cluster from the management API.
type Machines struct {
	Client client.Reader
}

var _ cloudprovider.Machines = (*Machines)(nil)

// Machine finds a node's machine by provider ID, else by node name.
func (m *Machines) Machine(ctx context.Context, cluster clusterref.Ref, nodeName, providerID string) (*cloudprovider.Machine, error) {
	c := &lotsev1.Cluster{}
	if err := m.Client.Get(ctx, client.ObjectKey{Namespace: cluster.Namespace, Name: cluster.Name}, c); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	list := &lotsev1.MachineList{}
	if err := m.Client.List(ctx, list, client.InNamespace(cluster.Namespace), client.MatchingLabels{lotsev1.LabelCluster: cluster.Name}); err != nil {
		return nil, err
	}
	for i := range list.Items {
		mc := &list.Items[i]
		id := cloudprovider.ProviderID(cluster, mc.Name)
		if !(providerID != "" && providerID == id) && mc.Name != nodeName && mc.Status.NodeName != nodeName {
			continue
		}
		out := &cloudprovider.Machine{Name: mc.Name, ProviderID: id, InstanceType: mc.Spec.MachineClass, Region: c.Spec.Region,
			Shutdown: mc.Status.Phase == lotsev1.MachineStopped}
		for _, a := range mc.Status.Addresses {
			if a.Type == "InternalIP" {
				out.Address = a.Address
			}
		}
		for _, pool := range c.Spec.Workers {
			if pool.Name == mc.Spec.Pool {
				out.Zone = pool.Zone(mc.Spec.Index)
				if pool.Region != "" {
					out.Region = pool.Region
				}
			}
		}
		if out.Zone == "" {
			out.Zone = out.Region + "-1" // every machine is in some zone
		}
		return out, nil
	}
	return nil, nil
}
