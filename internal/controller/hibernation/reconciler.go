// Package hibernation runs each Cluster's hibernation schedules: at a
// schedule's start it sets spec.hibernation.enabled to true, at its end to
// false (the cluster controller does the hibernating and waking). Between
// those times the flag is the user's. The time up to which the schedules
// were applied is kept in an annotation, so a restart of lotse applies
// what it missed (the latest due change) and nothing twice.
package hibernation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/hibernation"
)

// CheckedAnnotation holds the time (RFC 3339) up to which the schedules
// were applied, and after a space a digest of the schedules it is about.
const CheckedAnnotation = "lotse.dev/hibernation-schedules-checked"

// Reconciler applies hibernation schedules.
type Reconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// SetupWithManager registers the reconciler; status writes do not wake
// it, its own timer and spec or annotation changes do.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("hibernation").
		For(&lotsev1.Cluster{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Complete(r)
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile applies what one Cluster's schedules ask for now.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	c := &lotsev1.Cluster{}
	if err := r.Client.Get(ctx, req.NamespacedName, c); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !c.DeletionTimestamp.IsZero() || c.Annotations[lotsev1.PausedAnnotation] == "true" ||
		c.Spec.Hibernation == nil || len(c.Spec.Hibernation.Schedules) == 0 {
		return ctrl.Result{}, nil
	}
	schedules, err := hibernation.Parse(c.Spec.Hibernation.Schedules)
	if err != nil {
		r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, "InvalidHibernationSchedule", "Hibernate", "%v", err)
		return ctrl.Result{}, nil // a spec change brings the next look
	}
	now := r.now().Truncate(time.Second)
	sum := schedulesSum(c.Spec.Hibernation.Schedules)
	checked, checkedSum, _ := strings.Cut(c.Annotations[CheckedAnnotation], " ")
	at, err := time.Parse(time.RFC3339, checked)
	if err != nil || checkedSum != sum {
		// First look at these schedules (new or edited): they apply from
		// now on, not retroactively.
		return r.record(ctx, c, now, sum, nil, schedules)
	}
	hibernate, due := hibernation.Due(schedules, at, now)
	if !due {
		return requeue(schedules, now), nil
	}
	var enabled *bool
	if c.Hibernating() != hibernate {
		enabled = &hibernate
		what := map[bool]string{true: "hibernating", false: "waking"}[hibernate]
		r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, "HibernationScheduled", "Hibernate", "a hibernation schedule is due: %s the cluster", what)
	}
	return r.record(ctx, c, now, sum, enabled, schedules)
}

// record writes the check time and, when set, spec.hibernation.enabled in
// one patch.
func (r *Reconciler) record(ctx context.Context, c *lotsev1.Cluster, now time.Time, sum string, enabled *bool, schedules []hibernation.Schedule) (ctrl.Result, error) {
	p := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}`, CheckedAnnotation, now.UTC().Format(time.RFC3339)+" "+sum)
	if enabled != nil {
		p += fmt.Sprintf(`,"spec":{"hibernation":{"enabled":%t}}`, *enabled)
	}
	p += "}"
	if err := r.Client.Patch(ctx, c, client.RawPatch(types.MergePatchType, []byte(p))); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return requeue(schedules, now), nil
}

// schedulesSum identifies a list of schedules, so that an edit is told
// from the list the check time belongs to.
func schedulesSum(specs []lotsev1.HibernationSchedule) string {
	data, _ := json.Marshal(specs)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:4])
}

// requeue comes back at the schedules' next time.
func requeue(schedules []hibernation.Schedule, now time.Time) ctrl.Result {
	start, end := hibernation.Next(schedules, now)
	next := start
	if next.IsZero() || (!end.IsZero() && end.Before(next)) {
		next = end
	}
	if next.IsZero() {
		return ctrl.Result{}
	}
	return ctrl.Result{RequeueAfter: next.Sub(now) + time.Second}
}
