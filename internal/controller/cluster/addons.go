package cluster

// Addons: the managed components inside the tenant cluster.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/addons"
	"github.com/lotse/lotse/internal/addons/keeper"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/releases"
)

// AddonKeeper keeps the declared addons of tenant clusters (applies them,
// watches and repairs them); keeper.Keeper implements it.
type AddonKeeper interface {
	// Ensure declares a cluster's addons and returns each one's state.
	Ensure(ctx context.Context, key string, dyn dynamic.Interface, set []addons.Addon, events keeper.EventFunc) ([]keeper.State, error)
	// States returns the last known state of a cluster's addons.
	States(key string) ([]keeper.State, bool)
	// Forget stops keeping a deleted cluster's addons.
	Forget(key string)
}

// ensureAddons declares the managed components to the keeper (which applies
// what changed and repairs drift between reconciles) and is done once they
// are available.
func (r *Reconciler) ensureAddons(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) (bool, string, error) {
	kc, err := r.Backend.AdminKubeconfig(spec)
	if err != nil {
		return false, "", err
	}
	dyn, err := r.Tenants.Dynamic(spec.Key, kc)
	if err != nil {
		return false, "", err
	}
	version, err := r.addonVersion(ctx, c)
	if err != nil {
		return false, "", err
	}
	set, err := images.Lookup(version)
	if err != nil {
		return false, "", err
	}
	cfg := addons.Config{
		ClusterDNS:   addons.ClusterDNS(c.Spec.Networking.Services),
		CoreDNSImage: set.CoreDNS.Ref(),
		Upstreams:    r.DNSUpstreams,
		Replicas:     min(2, totalMinimum(c)),
		// The rights of the cluster's own cloud controller manager.
		CloudController: spec.CloudController != nil,
	}
	// A backend without PKI files (another than the process backend) has
	// no trust to follow.
	if cfg.TrustDigest, err = r.Backend.PKI(spec.Key).NodeTrustDigest(); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, "", err
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
	if err := r.watchTenant(ctx, c, spec); err != nil {
		return false, "", err
	}
	if cfg.Network, err = r.podNetwork(c, spec); err != nil {
		return false, "", err
	}
	if cfg.NetworkPolicies, err = r.networkPolicies(ctx, c, spec); err != nil {
		return false, "", err
	}
	if cfg.Storage, err = r.storage(ctx, c); err != nil {
		return false, "", err
	}
	if cfg.Metrics, err = r.metrics(spec); err != nil {
		return false, "", err
	}
	declared, err := addons.Render(cfg)
	if err != nil {
		return false, "", err
	}
	// Events of repairs go to the Cluster; the keeper calls this from its
	// own goroutines, so it holds a copy.
	subject := c.DeepCopy()
	states, err := r.Addons.Ensure(ctx, spec.Key, dyn, declared, func(eventType, reason, action, msg string) {
		r.event(subject, eventType, reason, action, "%s", msg)
	})
	if err != nil {
		return false, "", err
	}
	if totalMinimum(c) == 0 {
		return true, "", nil // no nodes: nothing can run, nothing to wait for
	}
	ok, msg := summarize(states)
	return ok, msg, nil
}

// summarize turns the addons' states into one verdict and message.
func summarize(states []keeper.State) (bool, string) {
	ok := true
	var msgs []string
	for _, s := range states {
		ok = ok && s.Healthy
		if !s.Healthy {
			msgs = append(msgs, fmt.Sprintf("%s: %s", s.Name, s.Message))
		}
	}
	if ok {
		return true, fmt.Sprintf("%d addons available", len(states))
	}
	return false, strings.Join(msgs, "; ")
}

// addonStatus is the status.addons view of the keeper's states.
func addonStatus(states []keeper.State) []lotsev1.AddonStatus {
	var out []lotsev1.AddonStatus
	for _, s := range states {
		out = append(out, lotsev1.AddonStatus{Name: s.Name, Healthy: s.Healthy, Message: truncate(s.Message, 512), Ignored: s.Ignored})
	}
	return out
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

// networkPolicies configures the policy agent and the default policies.
func (r *Reconciler) networkPolicies(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) (*addons.NetworkPolicies, error) {
	access, err := r.Backend.NodeAccess(spec)
	if err != nil {
		return nil, err
	}
	np := &addons.NetworkPolicies{
		AgentImage:                  images.KubeRouter().Ref(),
		ServiceCIDR:                 c.Spec.Networking.Services,
		NodesCIDR:                   access.NodesCIDR,
		APIServer:                   access.Gateway,
		APIPort:                     access.APIPort,
		DefaultDenyTenantNamespaces: c.Spec.Networking.DefaultDenyTenantNamespaces,
	}
	if np.DefaultDenyTenantNamespaces {
		if np.TenantNamespaces, err = r.tenantNamespaces(ctx, spec); err != nil {
			return nil, err
		}
	}
	return np, nil
}

// podNetwork configures a pod network that runs in the cluster (nil for
// Lotse's bridge, which the machines set up themselves).
func (r *Reconciler) podNetwork(c *lotsev1.Cluster, spec controlplane.Spec) (*addons.Network, error) {
	plugin := c.Spec.Networking.Plugin
	if plugin == "" || plugin == lotsev1.NetworkPluginBridge {
		return nil, nil
	}
	access, err := r.Backend.NodeAccess(spec)
	if err != nil {
		return nil, err
	}
	return &addons.Network{Plugin: string(plugin), PodCIDR: c.Spec.Networking.Pods,
		APIServerHost: access.Gateway, APIServerPort: access.APIPort}, nil
}

// storage configures node-local volumes: each machine's node keeps them
// where its machine says (on the machine's own disk).
func (r *Reconciler) storage(ctx context.Context, c *lotsev1.Cluster) (*addons.Storage, error) {
	list := &lotsev1.MachineList{}
	if err := r.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err != nil {
		return nil, err
	}
	s := &addons.Storage{
		ProvisionerImage: images.LocalPathProvisioner().Ref(),
		HelperImage:      images.LocalPathHelper().Ref(),
		NodePaths:        map[string]string{},
	}
	for _, m := range list.Items {
		if m.Status.NodeName != "" && m.Status.LocalVolumesPath != "" && m.DeletionTimestamp.IsZero() {
			s.NodePaths[m.Status.NodeName] = m.Status.LocalVolumesPath
		}
	}
	return s, nil
}

// metrics configures metrics-server with its serving certificate.
func (r *Reconciler) metrics(spec controlplane.Spec) (*addons.Metrics, error) {
	access, err := r.Backend.NodeAccess(spec)
	if err != nil {
		return nil, err
	}
	creds, err := r.Backend.AddonServing(spec, addons.MetricsServerName, addons.MetricsServerDNSNames)
	if err != nil {
		return nil, err
	}
	return &addons.Metrics{Image: images.MetricsServer().Ref(), CA: creds.CA, Cert: creds.Cert, Key: creds.Key, NodesCIDR: access.NodesCIDR}, nil
}

// CloudAPI lets the cloud controller manager of a cluster, a process of
// its control plane built with its release, into the manager's cloud API.
type CloudAPI interface {
	// Access serves the cluster with this UID and region and returns what
	// its cloud controller manager reaches the API with.
	Access(cluster clusterref.Ref, uid, region string) (controlplane.CloudAPIAccess, error)
	// Lookup returns what Access gave the cluster, issuing and
	// registering nothing (for readers such as care).
	Lookup(cluster clusterref.Ref, uid, region string) (controlplane.CloudAPIAccess, error)
	// Forget stops serving a cluster (waiting for its requests in
	// flight) and drops its credentials.
	Forget(cluster clusterref.Ref) error
}

// cloudControllerTask is the backend's task that runs a cluster's cloud
// controller manager (process.TaskCloudController).
const cloudControllerTask = "cloud-controller-manager"

// withCloudController gives the spec the cluster's cloud controller
// manager (WithCloudController).
func (r *Reconciler) withCloudController(c *lotsev1.Cluster, spec *controlplane.Spec, rel releases.Release) error {
	if r.CloudAPI == nil {
		return nil
	}
	return WithCloudController(c, spec, rel, r.Releases, r.CloudAPI.Access)
}

// CloudAccess returns a cluster's way into the cloud API (CloudAPI's
// Access, or Lookup for a reader).
type CloudAccess func(cluster clusterref.Ref, uid, region string) (controlplane.CloudAPIAccess, error)

// WithCloudController gives a cluster with worker pools, whose control
// plane runs as processes on this host, its own cloud controller manager
// from its release, once that is built (until then, and for control
// planes on seeds, the manager runs the cluster's cloud controllers). The
// cluster controller and care make the same spec with it.
func WithCloudController(c *lotsev1.Cluster, spec *controlplane.Spec, rel releases.Release, store *releases.Store, access CloudAccess) error {
	if access == nil || store == nil || spec.Seed != "" || len(c.Spec.Workers) == 0 {
		return nil
	}
	bin, err := store.CloudController(rel)
	if err != nil {
		return nil
	}
	api, err := access(refOf(c), string(c.UID), c.Spec.Region)
	if err != nil {
		return fmt.Errorf("the cloud API's access for the cloud controller manager: %w", err)
	}
	spec.CloudController = &controlplane.CloudController{Binary: bin, API: api}
	return nil
}

// CloudControllers runs the cloud controller manager of each cluster
// (cloudcontroller.Runner implements it).
type CloudControllers interface {
	// Ensure runs the cluster's cloud controllers with this client.
	Ensure(ctx context.Context, cluster clusterref.Ref, cs kubernetes.Interface, region string)
	// Forget stops them and removes the cluster's load balancers.
	Forget(ctx context.Context, cluster clusterref.Ref) error
	// Stop stops them and keeps the load balancers' addresses.
	Stop(cluster clusterref.Ref)
}

// ensureCloud runs the cluster's cloud controllers.
func (r *Reconciler) ensureCloud(_ context.Context, c *lotsev1.Cluster, spec controlplane.Spec) (bool, string, error) {
	if r.Cloud == nil {
		return true, "", nil
	}
	if spec.CloudController != nil {
		// The cluster's own process serves; the manager's controllers
		// (from before it was built, or before an upgrade of Lotse) end.
		r.Cloud.Stop(refOf(c))
		return true, "", nil
	}
	cs, err := r.tenantClient(spec)
	if err != nil {
		return false, "", err
	}
	// The controllers outlive this reconcile: the context only carries
	// the logger.
	r.Cloud.Ensure(context.Background(), refOf(c), cs, c.Spec.Region)
	return true, "", nil
}

func totalMinimum(c *lotsev1.Cluster) int {
	n := 0
	for _, p := range c.Spec.Workers {
		n += int(p.Minimum)
	}
	return n
}

// addonVersion is the release whose addon versions (CoreDNS) the cluster
// runs: that of its oldest machine. During a roll, nodes of the old
// version have only the old images, while new nodes load the images of
// the minor before theirs too (see manager's node images); so the addons
// move when the last old machine has gone.
func (r *Reconciler) addonVersion(ctx context.Context, c *lotsev1.Cluster) (string, error) {
	list := &lotsev1.MachineList{}
	if err := r.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err != nil {
		return "", err
	}
	version := c.Spec.Kubernetes.Version
	oldest, err := releases.ParseVersion(version)
	if err != nil {
		return "", err
	}
	for _, m := range list.Items {
		if v, err := releases.ParseVersion(m.Spec.Version); err == nil && v.Less(oldest) {
			oldest, version = v, m.Spec.Version
		}
	}
	return version, nil
}
