// Package maintenance runs each Cluster's maintenance, as Gardener's shoot
// maintenance does: in the cluster's daily window (or at once, asked for
// with the annotation lotse.dev/operation: maintain) it moves the cluster
// to the newest patch of its minor (spec.maintenance.autoUpdate) and off an
// expired version. It changes only the Cluster's spec; the cluster
// controller does the upgrade. status.maintenance shows the next window
// and what it will do.
package maintenance

import (
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controller/patch"
	"github.com/lotse/lotse/internal/maintenance"
	"github.com/lotse/lotse/internal/releases"
)

// Reconciler maintains Clusters.
type Reconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// Catalog is the release catalog (nil: the built-in one).
	Catalog releases.Catalog
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// SetupWithManager registers the reconciler. Status changes of a Cluster
// do not wake it (the cluster controller writes those often); its own
// timer and spec or annotation changes do.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("maintenance").
		For(&lotsev1.Cluster{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Complete(r)
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Reconciler) catalog() releases.Catalog {
	if r.Catalog != nil {
		return r.Catalog
	}
	return releases.DefaultCatalog()
}

// Reconcile looks at one Cluster's maintenance.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	c := &lotsev1.Cluster{}
	if err := r.Client.Get(ctx, req.NamespacedName, c); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !c.DeletionTimestamp.IsZero() || c.Annotations[lotsev1.PausedAnnotation] == "true" {
		return ctrl.Result{}, nil
	}
	if c.Spec.Maintenance.TimeWindow == nil {
		// The default window: an hour picked from the UID, written into
		// the spec so that the tenant sees (and may change) it.
		begin, end := maintenance.Default(string(c.UID))
		before := c.DeepCopy()
		c.Spec.Maintenance.TimeWindow = &lotsev1.MaintenanceTimeWindow{Begin: begin, End: end}
		if err := r.Client.Patch(ctx, c, client.MergeFrom(before)); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		r.event(c, corev1.EventTypeNormal, "MaintenanceWindowChosen", "Maintain", "maintenance window %s to %s (daily)", begin, end)
	}
	window, err := maintenance.Parse(c.Spec.Maintenance.TimeWindow.Begin, c.Spec.Maintenance.TimeWindow.End)
	if err != nil {
		// The schema refuses such windows; this is an old object.
		r.event(c, corev1.EventTypeWarning, "MaintenanceWindowInvalid", "Maintain", "spec.maintenance.timeWindow: %v", err)
		return ctrl.Result{}, nil
	}

	now := r.now()
	auto := c.Spec.Maintenance.AutoUpdate.KubernetesVersion == nil || *c.Spec.Maintenance.AutoUpdate.KubernetesVersion
	asked := c.Annotations[lotsev1.OperationAnnotation] == lotsev1.OperationMaintain
	update, pending := maintenance.Plan(r.catalog(), c.Spec.Kubernetes.Version, auto, now)
	upgrading := c.Status.KubernetesVersion != "" && c.Status.KubernetesVersion != c.Spec.Kubernetes.Version

	status := &lotsev1.MaintenanceStatus{}
	if c.Status.Maintenance != nil {
		status = c.Status.Maintenance.DeepCopy()
	}
	inWindow := window.Contains(now)
	ran := false
	var actions []string
	switch {
	case (inWindow || asked) && pending && upgrading:
		// One version change at a time: the next window (or the next
		// look, while this one lasts) takes it.
		if asked {
			actions = []string{"nothing changed: an upgrade to " + c.Spec.Kubernetes.Version + " is still running"}
			ran = true
		}
	case (inWindow || asked) && pending:
		before := c.DeepCopy()
		c.Spec.Kubernetes.Version = update.To
		if err := r.Client.Patch(ctx, c, client.MergeFrom(before)); err != nil {
			return ctrl.Result{}, err
		}
		log.FromContext(ctx).Info("maintenance: updating", "update", update.String())
		r.event(c, corev1.EventTypeNormal, "MaintenanceUpdate", "Maintain", "%s", update.String())
		actions, ran, pending = []string{update.String()}, true, false
	case asked:
		actions, ran = []string{"nothing to do"}, true
	}
	if ran {
		status.LastRunTime = &metav1.Time{Time: now}
		status.LastRunActions = actions
	}
	if asked {
		if err := patch.RemoveAnnotationIf(ctx, r.Client, c, lotsev1.OperationAnnotation, lotsev1.OperationMaintain); err != nil {
			return ctrl.Result{}, err
		}
	}

	begin, end := window.Next(now)
	status.NextWindowBegin, status.NextWindowEnd = metav1.Time{Time: begin}, metav1.Time{Time: end}
	status.Pending = nil
	if pending {
		status.Pending = []string{update.String()}
	}
	if c.Status.Maintenance == nil || !sameStatus(c.Status.Maintenance, status) {
		before := c.DeepCopy()
		c.Status.Maintenance = status
		if err := patch.Status(ctx, r.Client, c, before); err != nil {
			return ctrl.Result{}, err
		}
	}

	// Look again when the window opens, and every minute while it is
	// open and something waits (an upgrade that must finish first).
	next := begin.Sub(now) + time.Second
	if inWindow {
		next = end.Sub(now) + time.Second
		if pending {
			next = time.Minute
		}
	}
	return ctrl.Result{RequeueAfter: max(next, time.Second)}, nil
}

func sameStatus(a, b *lotsev1.MaintenanceStatus) bool {
	return a.NextWindowBegin.Equal(&b.NextWindowBegin) && a.NextWindowEnd.Equal(&b.NextWindowEnd) &&
		slices.Equal(a.Pending, b.Pending) && slices.Equal(a.LastRunActions, b.LastRunActions) &&
		(a.LastRunTime == nil) == (b.LastRunTime == nil) && (a.LastRunTime == nil || a.LastRunTime.Equal(b.LastRunTime))
}

func (r *Reconciler) event(c *lotsev1.Cluster, kind, reason, action, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(c, nil, kind, reason, action, note, args...)
	}
}
