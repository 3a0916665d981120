package cluster

import (
	"context"
	"fmt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	seedcontroller "github.com/lotse/lotse/internal/controller/seed"
)

// placementMu serialises the choice of seeds (within this manager; one
// manager leads at a time).
var placementMu sync.Mutex

// seedRetry is how soon a cluster waiting for a seed looks again.
const seedRetry = 15 * time.Second

// seedPendingRequeue is how soon a control plane on a seed that is being
// created, changed or deleted is looked at again.
const seedPendingRequeue = 2 * time.Second

// placeOnSeed chooses the seed of a control plane that asks for one and
// records it in the status before anything is created there, so the
// choice survives a restart. Without a seed it reports why and waits.
func (r *Reconciler) placeOnSeed(ctx context.Context, cluster *lotsev1.Cluster, status *lotsev1.ClusterStatus, opType string) (bool, ctrl.Result, error) {
	// One placement at a time, on what the API says now: two clusters
	// placed at once must not both take a seed's last place.
	placementMu.Lock()
	defer placementMu.Unlock()
	seeds := &lotsev1.SeedList{}
	if err := r.reader().List(ctx, seeds); err != nil {
		return false, ctrl.Result{}, err
	}
	clusters := &lotsev1.ClusterList{}
	if err := r.reader().List(ctx, clusters); err != nil {
		return false, ctrl.Result{}, err
	}
	hosted, _ := seedcontroller.Hosted(clusters.Items)
	selector := cluster.Spec.ControlPlane.SeedSelector
	if selector == nil {
		selector = &metav1.LabelSelector{} // a manager on seeds only: any seed
	}
	name, err := seedcontroller.Schedule(selector, cluster.Spec.Region, seeds.Items, hosted)
	if err != nil {
		msg := err.Error()
		if c := meta.FindStatusCondition(status.Conditions, lotsev1.ConditionSeedScheduled); c == nil || c.Message != msg {
			r.event(cluster, corev1.EventTypeWarning, "NoSeed", "Schedule", "%s", msg)
		}
		setCondition(status, cluster.Generation, lotsev1.ConditionSeedScheduled, false, "NoSeed", msg)
		r.setOperation(status, opType, lotsev1.StateProcessing, 0, "waiting for a seed: "+msg, nil)
		if status.Phase == "" {
			status.Phase = lotsev1.PhasePending
		}
		return false, ctrl.Result{RequeueAfter: seedRetry}, r.writeStatus(ctx, cluster, status)
	}
	status.Seed = name
	setCondition(status, cluster.Generation, lotsev1.ConditionSeedScheduled, true, "Scheduled", "the control plane runs on seed "+name)
	r.event(cluster, corev1.EventTypeNormal, "Scheduled", "Schedule", "the control plane goes to seed %s", name)
	if err := r.writeStatus(ctx, cluster, status); err != nil {
		return false, ctrl.Result{}, err
	}
	return true, ctrl.Result{}, nil
}

// hostedOnThisCluster says which control planes a seed that is this
// cluster hosts (empty: none), read uncached.
func (r *Reconciler) hostedOnThisCluster(ctx context.Context, c *lotsev1.Cluster) (string, error) {
	seeds := &lotsev1.SeedList{}
	if err := r.reader().List(ctx, seeds); err != nil {
		return "", err
	}
	var mine []string
	for _, s := range seeds.Items {
		ref := s.Spec.KubeconfigSecretRef
		if ref != nil && ref.Namespace == c.Namespace && ref.Name == KubeconfigSecretName(c.Name) {
			mine = append(mine, s.Name)
		}
	}
	if len(mine) == 0 {
		return "", nil
	}
	clusters := &lotsev1.ClusterList{}
	if err := r.reader().List(ctx, clusters); err != nil {
		return "", err
	}
	_, names := seedcontroller.Hosted(clusters.Items)
	for _, s := range mine {
		if hosted := names[s]; len(hosted) > 0 {
			return fmt.Sprintf("the cluster is seed %s, which hosts the control planes of %s; delete those clusters first", s, strings.Join(hosted, ", ")), nil
		}
	}
	return "", nil
}

// reader is the uncached reader, or the client where none is set (tests).
func (r *Reconciler) reader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}
