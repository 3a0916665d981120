package cluster

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	_, err = controllerutil.CreateOrUpdate(ctx, r.Client, secret, func() error {
		if secret.Labels == nil {
			secret.Labels = map[string]string{}
		}
		secret.Labels["lotse.dev/cluster"] = c.Name
		secret.Type = corev1.SecretTypeOpaque
		secret.Data = map[string][]byte{"kubeconfig": data}
		return controllerutil.SetControllerReference(c, secret, r.Client.Scheme())
	})
	return err
}
