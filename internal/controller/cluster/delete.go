package cluster

// Deletion: machines first (their finalizers drain and clean up), then
// the machine network, the control plane and its kubeconfig Secret.

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane"
)

func (r *Reconciler) reconcileDelete(ctx context.Context, c *lotsev1.Cluster) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(c, lotsev1.ClusterFinalizer) {
		return ctrl.Result{}, nil
	}
	status := c.Status.DeepCopy()
	if status.Phase != lotsev1.PhaseDeleting {
		status.Phase = lotsev1.PhaseDeleting
		r.setOperation(status, lotsev1.OperationDelete, lotsev1.StateProcessing, 0, "stopping the control plane and removing its data", nil)
		if err := r.writeStatus(ctx, c, status); err != nil {
			return ctrl.Result{}, err
		}
		r.event(c, corev1.EventTypeNormal, "Deleting", "Delete", "deleting the control plane")
	}
	// A seed's control planes live on this cluster's machines: they go
	// first, or their clusters could never be deleted.
	if hosting, err := r.hostedOnThisCluster(ctx, c); err != nil {
		return ctrl.Result{}, err
	} else if hosting != "" {
		msg := "waiting: " + hosting
		if status.LastOperation == nil || status.LastOperation.Description != msg {
			r.event(c, corev1.EventTypeWarning, "DeletionWaiting", "Delete", "%s", hosting)
		}
		r.setOperation(status, lotsev1.OperationDelete, lotsev1.StateProcessing, 0, msg, nil)
		return ctrl.Result{RequeueAfter: seedRetry}, r.writeStatus(ctx, c, status)
	}
	// Machines first: their finalizers drain nodes and clean up the host.
	gone, err := r.deleteMachines(ctx, c)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !gone {
		r.setOperation(status, lotsev1.OperationDelete, lotsev1.StateProcessing, 0, "waiting for the machines to be deleted", nil)
		return ctrl.Result{RequeueAfter: time.Second}, r.writeStatus(ctx, c, status)
	}
	ref := refOf(c)
	if r.Provider != nil {
		// Sweep whatever machines left (a machine whose object vanished
		// with its finalizer removed by hand), then the network itself.
		if err := r.Provider.DeleteNetwork(ctx, ref); err != nil {
			return ctrl.Result{}, err
		}
	}
	if r.Addons != nil {
		r.Addons.Forget(ref.Key())
	}
	if r.Responders != nil {
		r.Responders.Stop(ref.Key())
	}
	// The cluster's own cloud controller manager is refused (and its
	// requests in flight have ended) before the balancers go, so none
	// comes back.
	if r.CloudAPI != nil {
		if err := r.CloudAPI.Forget(ref); err != nil {
			return ctrl.Result{}, err
		}
	}
	if r.Cloud != nil {
		if err := r.Cloud.Forget(ctx, ref); err != nil {
			return ctrl.Result{}, err
		}
	}
	if r.Tenants != nil {
		r.Tenants.Forget(ref.Key())
	}
	r.forgetAutoscaling(c)
	if err := r.Backend.Delete(ctx, ref.Key()); errors.Is(err, controlplane.ErrInProgress) {
		r.setOperation(status, lotsev1.OperationDelete, lotsev1.StateProcessing, 0, err.Error(), nil)
		return ctrl.Result{RequeueAfter: seedPendingRequeue}, r.writeStatus(ctx, c, status)
	} else if err != nil {
		r.setOperation(status, lotsev1.OperationDelete, lotsev1.StateError, 0, err.Error(), nil)
		return ctrl.Result{}, errors.Join(err, r.writeStatus(ctx, c, status))
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: KubeconfigSecretName(c.Name)}}
	if err := r.Client.Delete(ctx, secret); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	controllerutil.RemoveFinalizer(c, lotsev1.ClusterFinalizer)
	if err := r.Client.Update(ctx, c); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// deleteMachines deletes every Machine of the cluster and reports whether
// they are all gone (their finalizers drain and clean up).
func (r *Reconciler) deleteMachines(ctx context.Context, c *lotsev1.Cluster) (bool, error) {
	list := &lotsev1.MachineList{}
	if err := r.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err != nil {
		return false, err
	}
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp.IsZero() {
			if err := r.Client.Delete(ctx, &list.Items[i]); client.IgnoreNotFound(err) != nil {
				return false, err
			}
		}
	}
	return len(list.Items) == 0, nil
}
