package cluster

// Addons: the managed components inside the tenant cluster.

import (
	"context"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/addons"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/images"
)

// ensureAddons applies the managed components (drift correction included)
// and is done once they are available.
func (r *Reconciler) ensureAddons(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) (bool, string, error) {
	kc, err := r.Backend.AdminKubeconfig(spec)
	if err != nil {
		return false, "", err
	}
	dyn, err := r.Tenants.Dynamic(spec.Key, kc)
	if err != nil {
		return false, "", err
	}
	set, err := images.Lookup(c.Spec.Kubernetes.Version)
	if err != nil {
		return false, "", err
	}
	cfg := addons.Config{
		ClusterDNS:   addons.ClusterDNS(c.Spec.Networking.Services),
		CoreDNSImage: set.CoreDNS.Ref(),
		Upstreams:    r.DNSUpstreams,
		Replicas:     min(2, totalMinimum(c)),
	}
	// CoreDNS tolerates the pools' own taints (exactly those), so a cluster
	// whose pools are all tainted still has DNS.
	for _, pool := range c.Spec.Workers {
		for _, t := range pool.Taints {
			cfg.Tolerations = append(cfg.Tolerations, addons.Toleration{Key: t.Key, Value: t.Value, Effect: t.Effect})
		}
	}
	if cfg.Tunnel, err = r.tunnelAddon(spec); err != nil {
		return false, "", err
	}
	objs, err := addons.Render(cfg)
	if err != nil {
		return false, "", err
	}
	if err := addons.Apply(ctx, dyn, objs); err != nil {
		return false, "", err
	}
	cs, err := r.Tenants.For(spec.Key, kc)
	if err != nil {
		return false, "", err
	}
	if err := r.watchTenant(ctx, c, spec); err != nil {
		return false, "", err
	}
	if totalMinimum(c) == 0 {
		return true, "", nil // no nodes: nothing can run, nothing to wait for
	}
	ok, msg, err := addons.Health(ctx, cs, cfg.Tunnel != nil)
	return ok, msg, err
}

// tunnelAddon configures the konnectivity agents of a cluster whose control
// plane has a tunnel (nil otherwise).
func (r *Reconciler) tunnelAddon(spec controlplane.Spec) (*addons.Tunnel, error) {
	access, err := r.Backend.NodeAccess(spec)
	if err != nil || access.TunnelPort == 0 {
		return nil, err
	}
	creds, err := r.Backend.TunnelCredentials(spec)
	if err != nil {
		return nil, err
	}
	rel := spec.Binaries.Release
	return &addons.Tunnel{
		Image:   images.Ref(images.KonnectivityAgentName, "v"+rel.Konnectivity),
		Host:    access.Gateway,
		Port:    access.TunnelPort,
		Servers: access.TunnelServers,
		CA:      creds.CA, Cert: creds.Cert, Key: creds.Key,
	}, nil
}

func totalMinimum(c *lotsev1.Cluster) int {
	n := 0
	for _, p := range c.Spec.Workers {
		n += int(p.Minimum)
	}
	return n
}
