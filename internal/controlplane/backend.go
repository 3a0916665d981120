// Package controlplane defines how Lotse hosts a cluster's control plane:
// etcd, kube-apiserver, kube-controller-manager and kube-scheduler, run
// outside the tenant's nodes by a Backend.
package controlplane

import (
	"context"
	"errors"
	"strings"

	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/tasks"
)

// Spec is the desired control plane of one cluster.
type Spec struct {
	// Key identifies the control plane, e.g. "cluster/default/c1" or "management".
	Key string
	// Name appears in certificates and kubeconfigs.
	Name string
	// Binaries of the Kubernetes release to run.
	Binaries releases.Binaries
	// HighAvailability: 3 etcd members, 2 API servers behind a load balancer,
	// 2 leader-elected controller-managers and schedulers.
	HighAvailability bool
	PodCIDR          string
	ServiceCIDR      string
	// NodesCIDR is the machines' network; empty lets the backend choose.
	NodesCIDR string
	// EncryptionProvider and EncryptedResources configure encryption at rest.
	EncryptionProvider string
	EncryptedResources []string
	// WithoutScheduler leaves the scheduler out (the management plane runs no pods).
	WithoutScheduler bool
	// SharedDatastore keeps the cluster's data in the backend's shared
	// etcd, under a key prefix of its own that only the cluster's etcd
	// user may read or write, instead of etcd members of its own. It is
	// chosen at creation and never changes.
	SharedDatastore bool
	// Controllers, when set, are the only controllers the
	// controller-manager runs (its --controllers); empty runs upstream's
	// default set. A fleet's control plane keeps the workload controllers
	// out, so its Deployments stay templates.
	Controllers []string
	// WithoutTunnel leaves the konnectivity servers out: a control plane
	// that never has nodes (the management plane) needs no path into them.
	WithoutTunnel bool
	// Seed names the Seed that runs the control plane as pods (empty:
	// the embedded process backend). Set at creation, never changed.
	Seed string
	// Rotation is the stage of each credential rotation the control plane
	// is to reach (empty: none runs). Stages are idempotent; each is
	// rolled out to every instance before the controller moves on.
	Rotation Rotation
	// CloudController runs the cluster's cloud controller manager as a
	// component of the control plane, one per controller-manager, built
	// from the cluster's release (nil: the manager runs the cluster's
	// cloud controllers itself).
	CloudController *CloudController
}

// CloudController is the cloud controller manager of one cluster: the
// release's lotse-cloud-controller-manager, which asks the manager's
// cloud API about machines and load balancers.
type CloudController struct {
	// Binary is the release's lotse-cloud-controller-manager.
	Binary string
	// API is where it reaches the cloud API, and with what.
	API CloudAPIAccess
}

// CloudAPIAccess is a cluster's way into the manager's cloud API: its URL,
// the CA that verifies it and the cluster's client certificate and key
// (PEM).
type CloudAPIAccess struct {
	URL           string
	CA, Cert, Key []byte
}

// Rotation stages of a control plane's credentials.
type Rotation struct {
	// ServiceAccountKey: "add" (a new key signs, the old one still
	// verifies) or "drop" (the old one goes).
	ServiceAccountKey string
	// EncryptionKey: "add" (a new key decrypts), "promote" (it
	// encrypts), "drop" (the old one goes).
	EncryptionKey string
	// CA (the cluster CA): "add" (a new CA is trusted everywhere),
	// "reissue" (it signs; every certificate is issued again) or "drop"
	// (the old CA goes).
	CA string
}

// ControllersFlag is the controller-manager's --controllers: the spec's
// list, or every default controller plus the bootstrap-token ones that
// node joining needs.
func (s Spec) ControllersFlag() string {
	if len(s.Controllers) == 0 {
		return "*,bootstrapsigner,tokencleaner"
	}
	return strings.Join(s.Controllers, ",")
}

// Component health as seen by the backend.
type ComponentHealth struct {
	Name    string
	Healthy bool
	Message string
}

// Status is the observed state of a control plane.
type Status struct {
	// Endpoint is the URL clients use for the API server.
	Endpoint string
	// APIServerAvailable: /readyz answers ok through Endpoint.
	APIServerAvailable bool
	APIServerMessage   string
	Components         []ComponentHealth
	// EncryptionProvider is the provider of the key that encrypts ("" if
	// the control plane has none yet).
	EncryptionProvider string
	// Rollout says, per component in upgrade order, how many instances
	// run the spec's binaries and flags: an upgrade's progress.
	Rollout []ComponentRollout
}

// ComponentRollout is how far a component's instances are updated.
type ComponentRollout struct {
	Component      string
	Updated, Total int
}

// Healthy reports whether every component is healthy.
func (s Status) Healthy() bool {
	if len(s.Components) == 0 {
		return false
	}
	for _, c := range s.Components {
		if !c.Healthy {
			return false
		}
	}
	return true
}

// Unhealthy lists the components that are not healthy, with their messages.
func (s Status) Unhealthy() []ComponentHealth {
	var out []ComponentHealth
	for _, c := range s.Components {
		if !c.Healthy {
			out = append(out, c)
		}
	}
	return out
}

// TunnelCredentials are what a konnectivity agent presents and trusts.
type TunnelCredentials struct {
	// CA verifies the tunnel server's certificate.
	CA []byte
	// Cert and Key are the agent's client certificate and key.
	Cert, Key []byte
}

// ServingCredentials are a serving certificate and the CA clients verify
// it with (PEM).
type ServingCredentials struct {
	CA, Cert, Key []byte
}

// NodeAccess says where the machines of a cluster reach its control plane.
type NodeAccess struct {
	// NodesCIDR is the network of the cluster's machines; its first
	// address, the gateway, is where the node endpoints listen.
	NodesCIDR string
	Gateway   string
	// APIServer is the API URL for nodes and pods; APIPort its port.
	APIServer string
	APIPort   int
	// TunnelPort is where konnectivity agents dial the tunnel servers on
	// the gateway (0: the control plane has no tunnel); TunnelServers is
	// how many servers each agent must connect to.
	TunnelPort    int
	TunnelServers int
}

// GatewayPorts are the ports machines may reach on the gateway.
func (a NodeAccess) GatewayPorts() []int {
	if a.TunnelPort == 0 {
		return []int{a.APIPort}
	}
	return []int{a.APIPort, a.TunnelPort}
}

// ErrInProgress marks an operation that was started and is not done yet
// (a Delete waiting for a seed to remove a namespace): call again later.
var ErrInProgress = errors.New("in progress")

// ErrRestoreRefused marks a restore the backend refused before it changed
// anything (the snapshot does not fit the control plane).
var ErrRestoreRefused = errors.New("restore refused")

// RestoreInput is what a restore puts back.
type RestoreInput struct {
	// Snapshot is the path of an etcd snapshot file (as Snapshot writes).
	Snapshot string
	// Credentials are a backup's credentials (from BackupCredentials);
	// the backend takes from them the encryption keys the restored data
	// needs, and keeps the cluster's own identity (CA, keys).
	Credentials map[string][]byte
}

// Backend hosts control planes.
type Backend interface {
	// Tasks returns the named steps that bring the control plane to spec.
	// They are idempotent: running them again on a converged control plane
	// changes nothing.
	Tasks(spec Spec) []tasks.Task
	// Status observes the control plane.
	Status(ctx context.Context, spec Spec) Status
	// AdminKubeconfig returns a kubeconfig with cluster-admin rights.
	AdminKubeconfig(spec Spec) ([]byte, error)
	// TunnelCredentials returns what the cluster's konnectivity agents
	// present and trust.
	TunnelCredentials(spec Spec) (TunnelCredentials, error)
	// AddonServing returns the serving certificate (and the CA that signed
	// it) of an addon the API server calls, e.g. an aggregated API, for
	// dnsNames: issued once per cluster and kept.
	AddonServing(spec Spec, name string, dnsNames []string) (ServingCredentials, error)
	// NodeAccess says where machines reach the control plane; it is known
	// once the control plane's first task ran.
	NodeAccess(spec Spec) (NodeAccess, error)
	// EnsureNodeAccess serves the API and the tunnel on the gateway of the
	// nodes network (the machine provider created the address).
	EnsureNodeAccess(spec Spec) (NodeAccess, error)
	// PKI is the control plane's PKI: the CA and node client certificates
	// machines are given.
	PKI(key string) pki.ClusterPKI
	// RestartComponent restarts the instances of one component
	// ("etcd", "kube-apiserver", ...) one at a time, each after the one
	// before answers its health check again: how upgrades roll a control
	// plane without downtime.
	RestartComponent(ctx context.Context, spec Spec, component string) error
	// Snapshot writes a consistent snapshot of the control plane's etcd to
	// path: the hook backups build on.
	Snapshot(ctx context.Context, spec Spec, path string) error
	// BackupCredentials returns, by name, the credentials a backup keeps
	// beside the snapshot: certificates, keys and encryption keys.
	BackupCredentials(spec Spec) (map[string][]byte, error)
	// Restore replaces the control plane's etcd data with a snapshot and
	// leaves it stopped (the next Tasks run starts it on the restored
	// data). It checks what it can before it stops anything, and running
	// it again after a crash has the same result.
	Restore(ctx context.Context, spec Spec, in RestoreInput) error
	// Delete stops everything of the control plane and removes its data.
	Delete(ctx context.Context, key string) error
	// Stop stops the processes of a control plane but keeps its data, so
	// it comes back with the next Tasks run (hibernation: Stop to sleep,
	// the tasks to wake).
	Stop(ctx context.Context, key string) error
}

// ServiceExposure is the Service in front of the API servers of a control
// plane hosted on a seed, as the seed asks for it.
type ServiceExposure struct {
	// LoadBalancer: the Service's load-balancer address is the endpoint;
	// otherwise (NodePort) the host forwards to the seed's node ports.
	LoadBalancer bool `json:"loadBalancer,omitempty"`
	// Annotations go on the Service.
	Annotations map[string]string `json:"annotations,omitempty"`
}
