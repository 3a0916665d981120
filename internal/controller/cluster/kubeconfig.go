package cluster

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane"
)

// ensureKubeconfigSecret writes the admin kubeconfig Secret beside the
// Cluster, owned by it.
func (r *Reconciler) ensureKubeconfigSecret(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) error {
	data, err := r.Backend.AdminKubeconfig(spec)
	if err != nil {
		return err
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: KubeconfigSecretName(c.Name)}}
	// A Secret of that name that Lotse did not make (planted before the
	// cluster, or recreated by hand without Lotse's label) is replaced,
	// not adopted: what it holds must not be handed out as the cluster's.
	existing := &corev1.Secret{}
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(secret), existing); err == nil {
		if !metav1.IsControlledBy(existing, c) || existing.Type != corev1.SecretTypeOpaque ||
			(existing.Immutable != nil && *existing.Immutable) || existing.Labels[lotsev1.LabelCluster] != c.Name {
			// Finalizers first, or a planted Secret would only be
			// marked for deletion and stay.
			if len(existing.Finalizers) > 0 {
				orig := existing.DeepCopy()
				existing.Finalizers = nil
				if err := r.Client.Patch(ctx, existing, client.MergeFrom(orig)); client.IgnoreNotFound(err) != nil {
					return fmt.Errorf("replace Secret %s, which Lotse did not write: %w", existing.Name, err)
				}
			}
			if err := r.Client.Delete(ctx, existing, client.Preconditions{UID: &existing.UID}); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("replace Secret %s, which Lotse did not write: %w", existing.Name, err)
			}
			// The cache still shows it for a moment: write Lotse's
			// own at the next look.
			return fmt.Errorf("replaced Secret %s, which Lotse did not write; writing Lotse's own next", existing.Name)
		}
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	_, err = controllerutil.CreateOrUpdate(ctx, r.Client, secret, func() error {
		if secret.Labels == nil {
			secret.Labels = map[string]string{}
		}
		secret.Labels[lotsev1.LabelCluster] = c.Name
		secret.Type = corev1.SecretTypeOpaque
		secret.Data = map[string][]byte{"kubeconfig": data}
		return controllerutil.SetControllerReference(c, secret, r.Client.Scheme())
	})
	return err
}

// IsClusterKubeconfig reports whether a Secret is the kubeconfig Lotse
// wrote for cluster: it carries Lotse's label, which only Lotse may set
// (the lotse-managed-secrets admission policy). A Secret of the same name
// without it was put there by someone else and must not be trusted.
func IsClusterKubeconfig(s *corev1.Secret, cluster string) bool {
	return s.Labels[lotsev1.LabelCluster] == cluster && len(s.Data["kubeconfig"]) > 0
}
