// Package backup takes each Cluster's etcd snapshots: on spec.backup's
// schedule and on demand (annotation lotse.dev/operation: backup), keeps
// spec.backup.retention of them and reports them in status.backup. A
// snapshot is taken through the control-plane backend's snapshot hook,
// sealed with the manager's backup key together with the cluster's
// credentials, and streamed to the destination.
package backup

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/robfig/cron/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/backup"
	clustercontroller "github.com/lotse/lotse/internal/controller/cluster"
	"github.com/lotse/lotse/internal/controller/patch"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/cronspec"
	"github.com/lotse/lotse/internal/metrics"
	"github.com/lotse/lotse/internal/releases"
)

// DefaultRetention is how many snapshots are kept when spec.backup does
// not say (the schema's default; this covers objects written before it).
const DefaultRetention = 7

// Reconciler takes and prunes snapshots.
type Reconciler struct {
	Client       client.Client
	Backend      controlplane.Backend
	Releases     *releases.Store
	Destinations *backup.Destinations
	Recorder     events.EventRecorder
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// SetupWithManager registers the reconciler: spec and annotation changes
// wake it, its own timer does the rest (status writes do not: it writes
// status itself).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("backup").
		For(&lotsev1.Cluster{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Complete(r)
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// ParseSchedule checks spec.backup's schedule and time zone.
func ParseSchedule(spec *lotsev1.BackupSpec) (cron.Schedule, *time.Location, error) {
	loc, err := cronspec.Location("spec.backup.location", spec.Location)
	if err != nil {
		return nil, nil, err
	}
	s, err := cronspec.Parse("spec.backup.schedule", spec.Schedule, "0 */6 * * *")
	if err != nil {
		return nil, nil, err
	}
	return s, loc, nil
}

// Reconcile takes a snapshot of one Cluster when one is due.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	c := &lotsev1.Cluster{}
	if err := r.Client.Get(ctx, req.NamespacedName, c); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	onDemand := c.Annotations[lotsev1.OperationAnnotation] == lotsev1.OperationBackup
	if !c.DeletionTimestamp.IsZero() || c.Annotations[lotsev1.PausedAnnotation] == "true" {
		return ctrl.Result{}, nil
	}
	if c.Spec.Backup == nil && !onDemand {
		// Backups were turned off: nothing is planned and an old failure
		// no longer counts (the kept snapshots stay listed).
		if b := c.Status.Backup; b != nil && (b.NextScheduled != nil || b.LastError != "") {
			b = b.DeepCopy()
			b.NextScheduled, b.Schedule, b.LastError, b.LastFailureTime = nil, "", "", nil
			return ctrl.Result{}, r.writeStatus(ctx, c, b)
		}
		return ctrl.Result{}, nil
	}
	now := r.now()
	status := &lotsev1.BackupStatus{}
	if c.Status.Backup != nil {
		status = c.Status.Backup.DeepCopy()
	}
	spec := c.Spec.Backup
	if spec == nil {
		spec = &lotsev1.BackupSpec{}
	}

	var schedule cron.Schedule
	var loc *time.Location
	due := false
	if spec.Schedule == "" {
		status.Schedule, status.NextScheduled = "", nil
	} else {
		var err error
		schedule, loc, err = ParseSchedule(spec)
		if err != nil {
			status.LastError, status.LastFailureTime = err.Error(), &metav1.Time{Time: now}
			status.Schedule, status.NextScheduled = "", nil
			r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, "InvalidBackupSchedule", "Backup", "%v", err)
			if !onDemand {
				return ctrl.Result{}, r.writeStatus(ctx, c, status) // a spec change brings the next look
			}
		} else {
			key := spec.Schedule + " " + loc.String()
			if status.Schedule != key || status.NextScheduled == nil {
				// New or edited: it applies from now on.
				status.Schedule = key
				status.NextScheduled = &metav1.Time{Time: schedule.Next(now.In(loc))}
			}
			due = !now.Before(status.NextScheduled.Time)
		}
	}

	if due || onDemand {
		if wait := notReady(c); wait != "" {
			if onDemand {
				// Taken once the cluster can give one.
				return ctrl.Result{RequeueAfter: 15 * time.Second}, r.writeStatus(ctx, c, status)
			}
			// A sleeping or stopped cluster's data does not change; this
			// slot is skipped, as the log says.
			log.FromContext(ctx).Info("backup: scheduled snapshot skipped", "reason", wait)
		} else {
			start := time.Now()
			name, err := r.backup(ctx, c, status, now)
			if err != nil {
				metrics.BackupsTotal.WithLabelValues(c.Namespace, c.Name, "failure").Inc()
			} else {
				metrics.BackupsTotal.WithLabelValues(c.Namespace, c.Name, "success").Inc()
				metrics.BackupDuration.WithLabelValues(c.Namespace, c.Name).Observe(time.Since(start).Seconds())
			}
			if err != nil {
				status.LastError, status.LastFailureTime = err.Error(), &metav1.Time{Time: now}
				r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, "BackupFailed", "Backup", "%v", err)
			} else {
				status.LastError, status.LastSnapshot, status.LastSuccessTime = "", name, &metav1.Time{Time: now}
				r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, "BackupSucceeded", "Backup", "snapshot %s taken in %s and stored in %s", name, time.Since(start).Round(time.Millisecond), status.Destination)
			}
		}
		if schedule != nil {
			status.NextScheduled = &metav1.Time{Time: schedule.Next(now.In(loc))}
		}
		if onDemand {
			// Only if it still asks for a backup: a request for another
			// operation made meanwhile stays.
			if err := patch.RemoveAnnotationIf(ctx, r.Client, c, lotsev1.OperationAnnotation, lotsev1.OperationBackup); err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	if err := r.writeStatus(ctx, c, status); err != nil {
		return ctrl.Result{}, err
	}
	if status.NextScheduled == nil {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: max(status.NextScheduled.Sub(now), time.Second)}, nil
}

// notReady says why the cluster cannot give a snapshot now ("" if it can).
func notReady(c *lotsev1.Cluster) string {
	switch {
	case c.Hibernating() || (c.Status.Hibernation != nil && c.Status.Hibernation.Since != nil):
		return "the cluster is hibernated"
	case c.Annotations[lotsev1.RestoreAnnotation] != "":
		return "a restore is running"
	case c.Status.KubernetesVersion == "":
		return "the cluster has not been created yet"
	case !meta.IsStatusConditionTrue(c.Status.Conditions, lotsev1.ConditionControlPlaneHealthy):
		return "the control plane is not healthy"
	}
	return ""
}

// backup takes one snapshot, stores it, prunes the old ones and lists
// what is kept into status.
func (r *Reconciler) backup(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.BackupStatus, now time.Time) (string, error) {
	store, err := r.Destinations.Store(ctx, c.Spec.Backup, c.Namespace, c.Namespace, c.Name)
	if err != nil {
		return "", err
	}
	status.Destination = store.String()
	key, err := r.Destinations.Key(ctx)
	if err != nil {
		return "", err
	}
	rel, err := releases.Lookup(c.Status.KubernetesVersion)
	if err != nil {
		return "", err
	}
	bins, err := r.Releases.Binaries(rel)
	if err != nil {
		return "", err
	}
	cp := clustercontroller.SpecFor(c, bins)

	dir, err := r.Destinations.TempDir("lotse-backup-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	etcdFile := dir + "/etcd.db"
	if err := r.Backend.Snapshot(ctx, cp, etcdFile); err != nil {
		return "", fmt.Errorf("etcd snapshot: %w", err)
	}
	credentials, err := r.Backend.BackupCredentials(cp)
	if err != nil {
		return "", err
	}
	specJSON, err := json.Marshal(c.Spec)
	if err != nil {
		return "", err
	}
	name := backup.SnapshotName(now)
	m := backup.Manifest{Namespace: c.Namespace, Name: c.Name, UID: string(c.UID),
		KubernetesVersion: c.Status.KubernetesVersion, Created: now.UTC(), Spec: specJSON}

	pr, pw := io.Pipe()
	written := make(chan error, 1)
	go func() {
		err := backup.Write(pw, key, m, etcdFile, credentials)
		pw.CloseWithError(err)
		written <- err
	}()
	err = store.Put(ctx, backup.FileName(name), pr, -1)
	pr.CloseWithError(fmt.Errorf("the destination stopped reading"))
	if werr := <-written; err == nil && werr != nil {
		err = werr
	}
	if err != nil {
		return "", fmt.Errorf("store snapshot %s in %s: %w", name, store, err)
	}

	retention := int(spec(c).Retention)
	if retention == 0 {
		retention = DefaultRetention
	}
	// The snapshot is stored: a failure to prune or list is reported,
	// but the backup succeeded.
	if _, err := backup.Prune(ctx, store, retention); err != nil {
		r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, "BackupPruneFailed", "Backup", "snapshot %s is stored, but old snapshots could not be removed: %v", name, err)
	}
	snaps, err := backup.List(ctx, store)
	if err != nil {
		r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, "BackupListFailed", "Backup", "snapshot %s is stored, but the snapshots could not be listed: %v", name, err)
		status.Snapshots = append(status.Snapshots, lotsev1.SnapshotStatus{Name: name, Time: metav1.Time{Time: now}})
		return name, nil
	}
	status.Snapshots = status.Snapshots[:0]
	for _, s := range snaps {
		status.Snapshots = append(status.Snapshots, lotsev1.SnapshotStatus{Name: s.Name, Time: metav1.Time{Time: s.Taken}, Size: s.Size})
	}
	return name, nil
}

func spec(c *lotsev1.Cluster) *lotsev1.BackupSpec {
	if c.Spec.Backup == nil {
		return &lotsev1.BackupSpec{}
	}
	return c.Spec.Backup
}

func (r *Reconciler) writeStatus(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.BackupStatus) error {
	if equality.Semantic.DeepEqual(c.Status.Backup, status) {
		return nil
	}
	before := c.DeepCopy()
	c.Status.Backup = status
	return patch.Status(ctx, r.Client, c, before)
}
