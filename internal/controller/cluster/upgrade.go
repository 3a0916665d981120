package cluster

// Version upgrades: the backend rolls the control plane (etcd, then the
// API servers, then controller-managers and schedulers), then the worker
// pools roll (rolling.go); this follows the progress in status.upgrade.

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane"
)

// trackUpgrade keeps status.upgrade while the cluster moves from
// status.kubernetesVersion to target, and records the start and the end.
func (r *Reconciler) trackUpgrade(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus, target string, cp controlplane.Status, done bool) {
	from := status.KubernetesVersion
	if from == "" || from == target {
		status.Upgrade = nil
		return
	}
	if done {
		r.event(c, corev1.EventTypeNormal, "Upgraded", "Upgrade", "every control-plane component and node runs %s (from %s)", target, from)
		status.Upgrade = nil
		return
	}
	up := &lotsev1.UpgradeStatus{FromVersion: from, ToVersion: target}
	for _, ro := range cp.Rollout {
		up.Components = append(up.Components, lotsev1.ComponentUpgradeStatus{Name: ro.Component, Updated: int32(ro.Updated), Total: int32(ro.Total)})
	}
	if len(c.Spec.Workers) > 0 {
		list := &lotsev1.MachineList{}
		if err := r.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err == nil {
			for _, pool := range c.Spec.Workers {
				pu := lotsev1.ComponentUpgradeStatus{Name: "pool/" + pool.Name, Total: int32(r.poolDesired(c, pool))}
				for _, m := range list.Items {
					if m.Spec.Pool == pool.Name && m.DeletionTimestamp.IsZero() && m.Spec.Version == target && machineReady(&m) {
						pu.Updated++
					}
				}
				up.Components = append(up.Components, pu)
			}
		}
	}
	if status.Upgrade == nil || status.Upgrade.ToVersion != target {
		r.event(c, corev1.EventTypeNormal, "UpgradeStarted", "Upgrade", "upgrading from %s to %s: etcd, the API servers, controller-managers and schedulers one instance at a time, then the worker pools", from, target)
	}
	status.Upgrade = up
}
