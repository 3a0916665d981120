package cluster

// Status: the last operation, the health conditions and the pools' state,
// written through the one patch helper.

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controller/patch"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/tasks"
)

func (r *Reconciler) setOperation(status *lotsev1.ClusterStatus, opType, state string, progress int32, desc string, results tasks.Results) {
	op := &lotsev1.LastOperation{Type: opType, State: state, Progress: progress, Description: desc, LastUpdateTime: metav1.Now()}
	for _, res := range results {
		op.Tasks = append(op.Tasks, lotsev1.TaskStatus{Name: res.Name, State: res.State, Message: truncate(res.Message, 512)})
	}
	// Keep the timestamp stable when nothing else changed, so a converged
	// cluster does not rewrite its status every care cycle.
	if old := status.LastOperation; old != nil && sameOperation(old, op) {
		op.LastUpdateTime = old.LastUpdateTime
	}
	status.LastOperation = op
}

func sameOperation(a, b *lotsev1.LastOperation) bool {
	if a.Type != b.Type || a.State != b.State || a.Progress != b.Progress || a.Description != b.Description || len(a.Tasks) != len(b.Tasks) {
		return false
	}
	for i := range a.Tasks {
		if a.Tasks[i] != b.Tasks[i] {
			return false
		}
	}
	return true
}

func applyHealth(status *lotsev1.ClusterStatus, gen int64, results tasks.Results, cp controlplane.Status) {
	if cp.APIServerAvailable {
		setCondition(status, gen, lotsev1.ConditionAPIServerAvailable, true, "HealthzOK", "the API server answers /readyz at "+cp.Endpoint)
	} else {
		msg := cp.APIServerMessage
		if msg == "" {
			msg = "the API server is not ready yet"
		}
		setCondition(status, gen, lotsev1.ConditionAPIServerAvailable, false, "HealthzFailed", msg)
	}
	if cp.Healthy() {
		setCondition(status, gen, lotsev1.ConditionControlPlaneHealthy, true, "AllComponentsHealthy", fmt.Sprintf("%d control-plane processes healthy", len(cp.Components)))
	} else {
		var parts []string
		for _, c := range cp.Unhealthy() {
			parts = append(parts, c.Name+": "+c.Message)
		}
		msg := strings.Join(parts, "; ")
		if msg == "" {
			msg = "control plane not created yet"
		}
		setCondition(status, gen, lotsev1.ConditionControlPlaneHealthy, false, "ComponentsUnhealthy", truncate(msg, 1024))
	}
	switch {
	case !results.Done():
		setCondition(status, gen, lotsev1.ConditionReady, false, "Reconciling", results.Describe())
	case !cp.APIServerAvailable:
		setCondition(status, gen, lotsev1.ConditionReady, false, "APIServerUnavailable", "the API server does not answer")
	case !cp.Healthy():
		setCondition(status, gen, lotsev1.ConditionReady, false, "ControlPlaneUnhealthy", "some control-plane processes are not healthy")
	default:
		setCondition(status, gen, lotsev1.ConditionReady, true, "ClusterReady", "the cluster is reconciled and healthy")
	}
}

func setCondition(status *lotsev1.ClusterStatus, gen int64, typ string, ok bool, reason, msg string) {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
}

func (r *Reconciler) writeStatus(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus) error {
	if equalStatus(&c.Status, status) {
		return nil
	}
	before := c.DeepCopy()
	c.Status = *status
	return patch.Status(ctx, r.Client, c, before)
}

func equalStatus(a, b *lotsev1.ClusterStatus) bool {
	return a.ObservedGeneration == b.ObservedGeneration && a.Phase == b.Phase && a.Endpoint == b.Endpoint &&
		a.KubernetesVersion == b.KubernetesVersion && a.KubeconfigSecret == b.KubeconfigSecret &&
		a.NodesCIDR == b.NodesCIDR && a.Seed == b.Seed && slices.Equal(a.Workers, b.Workers) && addonsEqual(a.Addons, b.Addons) &&
		(a.LastOperation == nil) == (b.LastOperation == nil) &&
		(a.LastOperation == nil || (sameOperation(a.LastOperation, b.LastOperation) && a.LastOperation.LastUpdateTime.Equal(&b.LastOperation.LastUpdateTime))) &&
		conditionsEqual(a.Conditions, b.Conditions) && upgradeEqual(a.Upgrade, b.Upgrade) &&
		equality.Semantic.DeepEqual(a.Hibernation, b.Hibernation) && equality.Semantic.DeepEqual(a.Restore, b.Restore) &&
		equality.Semantic.DeepEqual(a.Credentials, b.Credentials)
}

func upgradeEqual(a, b *lotsev1.UpgradeStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.FromVersion == b.FromVersion && a.ToVersion == b.ToVersion && slices.Equal(a.Components, b.Components)
}

func addonsEqual(a, b []lotsev1.AddonStatus) bool {
	return slices.EqualFunc(a, b, func(x, y lotsev1.AddonStatus) bool {
		return x.Name == y.Name && x.Healthy == y.Healthy && x.Message == y.Message && slices.Equal(x.Ignored, y.Ignored)
	})
}

func conditionsEqual(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message || x.ObservedGeneration != y.ObservedGeneration {
			return false
		}
	}
	return true
}

func (r *Reconciler) event(c *lotsev1.Cluster, kind, reason, action, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(c, nil, kind, reason, action, note, args...)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// workerStatus summarises pools into status and the EveryNodeReady condition.
func (r *Reconciler) workerStatus(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus) error {
	if len(c.Spec.Workers) == 0 {
		status.Workers = nil
		meta.RemoveStatusCondition(&status.Conditions, lotsev1.ConditionEveryNodeReady)
		meta.RemoveStatusCondition(&status.Conditions, lotsev1.ConditionRemediationAllowed)
		meta.RemoveStatusCondition(&status.Conditions, lotsev1.ConditionSystemComponentsHealthy)
		status.Addons = nil
		return nil
	}
	list := &lotsev1.MachineList{}
	if err := r.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err != nil {
		return err
	}
	status.Workers = nil
	var notReady, blocked []string
	now := time.Now()
	for _, pool := range c.Spec.Workers {
		ps := lotsev1.WorkerPoolStatus{Name: pool.Name, Desired: int32(r.poolDesired(c, pool))}
		var live, deleting []*lotsev1.Machine
		for i := range list.Items {
			m := &list.Items[i]
			if m.Spec.Pool != pool.Name {
				continue
			}
			if !m.DeletionTimestamp.IsZero() {
				deleting = append(deleting, m)
				continue
			}
			live = append(live, m)
			if upToDate(pool, m, c.Spec.Kubernetes.Version) {
				ps.Updated++
			}
			if machineReady(m) {
				ps.Ready++
			} else {
				notReady = append(notReady, m.Name)
			}
		}
		if ps.Ready < ps.Desired {
			notReady = append(notReady, fmt.Sprintf("pool %s: %d/%d ready", pool.Name, ps.Ready, ps.Desired))
		}
		repair, err := checkPool(pool, live, now)
		if err != nil {
			return err
		}
		mayRepair := repair.blocked == "" && !repairsPaused(c, now)
		ps.Message = planPool(pool, int(ps.Desired), live, deleting, c.Spec.Kubernetes.Version, mayRepair).waiting
		if ps.Message == "" {
			ps.Message = drainMessage(deleting)
		}
		if note, _ := r.unplaceable.Load(refOf(c).Key()); autoscaled(pool) && ps.Message == "" && note != nil && note.(string) != "" {
			ps.Message = "pending pods no pool can take: " + note.(string)
		}
		ps.Message = truncate(ps.Message, 1024)
		status.Workers = append(status.Workers, ps)
		if repair.blocked != "" {
			blocked = append(blocked, repair.blocked)
		}
	}
	wasAllowed := !meta.IsStatusConditionFalse(status.Conditions, lotsev1.ConditionRemediationAllowed)
	if len(blocked) == 0 {
		cond := meta.FindStatusCondition(status.Conditions, lotsev1.ConditionRemediationAllowed)
		switch {
		case !wasAllowed, cond != nil && cond.Reason == reasonRepairsResumed && now.Sub(cond.LastTransitionTime.Time) < repairSettle:
			setCondition(status, c.Generation, lotsev1.ConditionRemediationAllowed, true, reasonRepairsResumed,
				"no pool has more unhealthy machines than its maxUnhealthy; repairs resume "+repairSettle.String()+" after this transition")
		default:
			setCondition(status, c.Generation, lotsev1.ConditionRemediationAllowed, true, "HealthChecksPass", "no pool has more unhealthy machines than its maxUnhealthy")
		}
	} else {
		msg := truncate(strings.Join(blocked, "; "), 1024)
		setCondition(status, c.Generation, lotsev1.ConditionRemediationAllowed, false, "TooManyUnhealthy", msg)
		if wasAllowed {
			r.event(c, corev1.EventTypeWarning, "RepairsStopped", "Repair", "%s", msg)
		}
	}
	r.systemComponentsHealth(c, status)
	if len(notReady) == 0 {
		setCondition(status, c.Generation, lotsev1.ConditionEveryNodeReady, true, "AllNodesReady", "every machine of every pool is a Ready node")
	} else {
		sort.Strings(notReady)
		setCondition(status, c.Generation, lotsev1.ConditionEveryNodeReady, false, "NodesNotReady", truncate(strings.Join(notReady, "; "), 1024))
	}
	return nil
}

// systemComponentsHealth sets SystemComponentsHealthy and status.addons
// from the keeper's view of the addons (its watches keep it current).
func (r *Reconciler) systemComponentsHealth(c *lotsev1.Cluster, status *lotsev1.ClusterStatus) {
	states, known := r.Addons.States(refOf(c).Key())
	if !known {
		setCondition(status, c.Generation, lotsev1.ConditionSystemComponentsHealthy, false, "AddonsUnknown", "the addons have not been applied yet")
		return
	}
	status.Addons = addonStatus(states)
	ok, msg := summarize(states)
	reason := "AddonsAvailable"
	if !ok {
		reason = "AddonsUnavailable"
	}
	setCondition(status, c.Generation, lotsev1.ConditionSystemComponentsHealthy, ok, reason, truncate(msg, 1024))
}
