// Package seed reconciles Seed objects: clusters that host other clusters'
// control planes as pods. It reports whether a seed is reachable and how
// many control planes it hosts, keeps a seed that still hosts some from
// going, and chooses the seed for a new control plane (Schedule).
package seed

import (
	"context"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/kubeconfig"
)

// Connector reads a seed's kubeconfig from its Secret (uncached: the
// manager does not cache Secrets of every namespace).
type Connector struct {
	Reader client.Reader
	// Management is the manager's client configuration of its management
	// API: the seed marked spec.managementCluster.
	Management *rest.Config
}

// Config returns the seed's client configuration.
func (c *Connector) Config(ctx context.Context, name string) (*rest.Config, error) {
	s, secret, err := c.secret(ctx, name)
	if err != nil {
		return nil, err
	}
	if s.Spec.ManagementCluster {
		if c.Management == nil {
			return nil, fmt.Errorf("spec.managementCluster: this manager has no client of its management cluster")
		}
		return rest.CopyConfig(c.Management), nil
	}
	cfg, err := kubeconfig.ParseUntrusted(secret.Data["kubeconfig"])
	if err != nil {
		return nil, fmt.Errorf("spec.kubeconfigSecretRef: Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return cfg, nil
}

// APIServerService returns how the seed exposes hosted API servers.
func (c *Connector) APIServerService(ctx context.Context, name string) (controlplane.ServiceExposure, error) {
	s := &lotsev1.Seed{}
	if err := c.Reader.Get(ctx, client.ObjectKey{Name: name}, s); err != nil {
		return controlplane.ServiceExposure{}, err
	}
	e := controlplane.ServiceExposure{LoadBalancer: s.Spec.APIServerService.Type != lotsev1.SeedServiceNodePort}
	if len(s.Spec.APIServerService.Annotations) > 0 {
		e.Annotations = maps.Clone(s.Spec.APIServerService.Annotations)
	}
	return e, nil
}

func (c *Connector) secret(ctx context.Context, name string) (*lotsev1.Seed, *corev1.Secret, error) {
	s := &lotsev1.Seed{}
	if err := c.Reader.Get(ctx, client.ObjectKey{Name: name}, s); err != nil {
		return nil, nil, err
	}
	if s.Spec.ManagementCluster {
		return s, nil, nil
	}
	if s.Spec.KubeconfigSecretRef == nil {
		return s, nil, fmt.Errorf("seed %s has neither spec.kubeconfigSecretRef nor spec.managementCluster", name)
	}
	ref := *s.Spec.KubeconfigSecretRef
	secret := &corev1.Secret{}
	if err := c.Reader.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, secret); err != nil {
		return s, nil, fmt.Errorf("spec.kubeconfigSecretRef: %w", err)
	}
	if len(secret.Data["kubeconfig"]) == 0 {
		return s, nil, fmt.Errorf("spec.kubeconfigSecretRef: Secret %s/%s has no key kubeconfig", ref.Namespace, ref.Name)
	}
	return s, secret, nil
}

// LotseCluster returns the Lotse cluster a seed is, when its kubeconfig
// Secret is one Lotse wrote for a cluster of this management plane (the
// cluster's NAME-kubeconfig, labelled with its name).
func (c *Connector) LotseCluster(ctx context.Context, name string) (clusterref.Ref, bool, error) {
	_, secret, err := c.secret(ctx, name)
	if err != nil || secret == nil {
		return clusterref.Ref{}, false, err
	}
	cluster := secret.Labels[lotsev1.LabelCluster]
	if cluster == "" || secret.Name != cluster+"-kubeconfig" {
		return clusterref.Ref{}, false, nil
	}
	owner := &lotsev1.Cluster{}
	if err := c.Reader.Get(ctx, client.ObjectKey{Namespace: secret.Namespace, Name: cluster}, owner); err != nil {
		return clusterref.Ref{}, false, client.IgnoreNotFound(err)
	}
	return clusterref.Ref{Namespace: secret.Namespace, Name: cluster}, true, nil
}
