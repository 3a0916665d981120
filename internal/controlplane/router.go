package controlplane

import (
	"context"

	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/tasks"
)

// PlacedBackend is a backend that knows which control planes it hosts.
type PlacedBackend interface {
	Backend
	// Hosts reports whether the control plane with key was placed here.
	Hosts(key string) bool
}

// Router sends each control plane to the backend that hosts it: those
// whose spec names a seed, or that were placed on one, to Seeds; every
// other to Local. Callers that know only a key reach the right backend
// too, because placement is recorded when a control plane is created.
type Router struct {
	Local Backend
	Seeds PlacedBackend
	// SeedsOnly sends every control plane to Seeds (a manager that runs
	// in a cluster has no host of its own to run processes on).
	SeedsOnly bool
}

var _ Backend = (*Router)(nil)

func (r *Router) bySpec(spec Spec) Backend {
	if r.Seeds != nil && (r.SeedsOnly || spec.Seed != "" || r.Seeds.Hosts(spec.Key)) {
		return r.Seeds
	}
	return r.Local
}

func (r *Router) byKey(key string) Backend {
	if r.Seeds != nil && (r.SeedsOnly || r.Seeds.Hosts(key)) {
		return r.Seeds
	}
	return r.Local
}

// Tasks of the hosting backend.
func (r *Router) Tasks(spec Spec) []tasks.Task { return r.bySpec(spec).Tasks(spec) }

// Status from the hosting backend.
func (r *Router) Status(ctx context.Context, spec Spec) Status {
	return r.bySpec(spec).Status(ctx, spec)
}

// AdminKubeconfig from the hosting backend.
func (r *Router) AdminKubeconfig(spec Spec) ([]byte, error) {
	return r.bySpec(spec).AdminKubeconfig(spec)
}

// TunnelCredentials from the hosting backend.
func (r *Router) TunnelCredentials(spec Spec) (TunnelCredentials, error) {
	return r.bySpec(spec).TunnelCredentials(spec)
}

// AddonServing from the hosting backend.
func (r *Router) AddonServing(spec Spec, name string, dnsNames []string) (ServingCredentials, error) {
	return r.bySpec(spec).AddonServing(spec, name, dnsNames)
}

// NodeAccess from the hosting backend.
func (r *Router) NodeAccess(spec Spec) (NodeAccess, error) { return r.bySpec(spec).NodeAccess(spec) }

// EnsureNodeAccess on the hosting backend.
func (r *Router) EnsureNodeAccess(spec Spec) (NodeAccess, error) {
	return r.bySpec(spec).EnsureNodeAccess(spec)
}

// PKI of the hosting backend.
func (r *Router) PKI(key string) pki.ClusterPKI { return r.byKey(key).PKI(key) }

// RestartComponent on the hosting backend.
func (r *Router) RestartComponent(ctx context.Context, spec Spec, component string) error {
	return r.bySpec(spec).RestartComponent(ctx, spec, component)
}

// Snapshot on the hosting backend.
func (r *Router) Snapshot(ctx context.Context, spec Spec, path string) error {
	return r.bySpec(spec).Snapshot(ctx, spec, path)
}

// BackupCredentials from the hosting backend.
func (r *Router) BackupCredentials(spec Spec) (map[string][]byte, error) {
	return r.bySpec(spec).BackupCredentials(spec)
}

// Restore on the hosting backend.
func (r *Router) Restore(ctx context.Context, spec Spec, in RestoreInput) error {
	return r.bySpec(spec).Restore(ctx, spec, in)
}

// Delete on the hosting backend.
func (r *Router) Delete(ctx context.Context, key string) error { return r.byKey(key).Delete(ctx, key) }

// Stop on the hosting backend.
func (r *Router) Stop(ctx context.Context, key string) error { return r.byKey(key).Stop(ctx, key) }

// SetOnReady passes the hook on to the local backend when it has one:
// the process backend tells when a starting API server becomes ready.
func (r *Router) SetOnReady(f func(key string)) {
	if n, ok := r.Local.(interface{ SetOnReady(func(key string)) }); ok {
		n.SetOnReady(f)
	}
}
