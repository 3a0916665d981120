package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/backup"
	"github.com/lotse/lotse/internal/controller/patch"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/metrics"
	"github.com/lotse/lotse/internal/releases"
)

// A restore (annotation lotse.dev/restore-from) replaces the cluster's
// etcd data with a snapshot: fetch and check the whole snapshot, then the
// backend stops the control plane and swaps the data, then the ordinary
// reconcile starts everything again. status.restore records the step, so
// a restart of lotse goes on where it was: until the data is swapped the
// restore runs again from the start (nothing changed yet; the backend's
// swap is itself repeatable), afterwards only the start remains. A
// refused restore changes nothing and says why in status.restore.

// restore runs the restore the annotation asks for up to the point where
// the control plane only has to start. done is true when the reconcile
// ends here (with res and err); false lets the ordinary reconcile go on.
func (r *Reconciler) restore(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus, spec controlplane.Spec, release releases.Release) (done bool, res ctrl.Result, err error) {
	value := c.Annotations[lotsev1.RestoreAnnotation]
	ref, err := backup.ParseRef(value, c.Namespace, c.Name)
	if err != nil {
		return true, ctrl.Result{}, r.refuseRestore(ctx, c, status, value, err)
	}
	if rs := status.Restore; rs != nil && rs.From == ref.String() {
		switch {
		case rs.Step == lotsev1.RestoreStepStarting:
			status.Phase = lotsev1.PhaseRestoring
			return false, ctrl.Result{}, nil
		case rs.Step == lotsev1.RestoreStepFailed && rs.CompletionTime != nil && time.Since(rs.CompletionTime.Time) < restoreRetry && status.KubernetesVersion == "":
			// A new cluster waits for its snapshot (see refuseRestore);
			// a running one was refused and lost the annotation, so
			// this is a new request, answered now.
			return true, ctrl.Result{RequeueAfter: restoreRetry - time.Since(rs.CompletionTime.Time)}, nil
		}
	}
	switch {
	case ref.Namespace != c.Namespace:
		return true, ctrl.Result{}, r.refuseRestore(ctx, c, status, ref.String(), fmt.Errorf("snapshots of clusters in namespace %s cannot be restored into namespace %s; restore it into a new cluster in %s", ref.Namespace, c.Namespace, ref.Namespace))
	case status.Upgrade != nil || (status.KubernetesVersion != "" && status.KubernetesVersion != release.Version):
		return true, ctrl.Result{}, r.refuseRestore(ctx, c, status, ref.String(), fmt.Errorf("a version change to %s is running; restore once it is done", release.Version))
	case rotationRunning(status):
		return true, ctrl.Result{}, r.refuseRestore(ctx, c, status, ref.String(), fmt.Errorf("a credential rotation is running (status.credentials.rotation); restore once it is prepared or completed"))
	case r.Destinations == nil:
		return true, ctrl.Result{}, r.refuseRestore(ctx, c, status, ref.String(), fmt.Errorf("this manager keeps no backups"))
	}
	if rs := status.Restore; rs == nil || rs.From != ref.String() || rs.Step != lotsev1.RestoreStepRestoring {
		status.Restore = &lotsev1.RestoreStatus{From: ref.String(), Step: lotsev1.RestoreStepRestoring,
			StartTime: &metav1.Time{Time: time.Now()}, Message: "fetching and checking the snapshot"}
		status.Phase = lotsev1.PhaseRestoring
		r.event(c, corev1.EventTypeNormal, "RestoreStarted", "Restore", "restoring etcd from snapshot %s", ref)
		if err := r.writeStatus(ctx, c, status); err != nil {
			return true, ctrl.Result{}, err
		}
	}

	if c.Spec.ControlPlane.Datastore == lotsev1.DatastoreShared {
		return true, ctrl.Result{}, r.refuseRestore(ctx, c, status, ref.String(), fmt.Errorf(
			"cluster %s/%s is on the shared datastore, which takes no restores yet; restore the snapshot into a new cluster with the dedicated datastore: lotse cluster restore %s --from %s --into NEW",
			c.Namespace, c.Name, ref.Cluster, ref.Snapshot))
	}
	source, err := r.restoreSource(ctx, c, ref)
	if err != nil {
		return true, ctrl.Result{}, r.retryRestore(ctx, c, status, fmt.Errorf("reading cluster %s for its backup destination: %w", ref.Cluster, err))
	}
	store, err := r.Destinations.Store(ctx, source, c.Namespace, ref.Namespace, ref.Cluster)
	if err != nil {
		return true, ctrl.Result{}, r.refuseRestore(ctx, c, status, ref.String(), err)
	}
	key, err := r.Destinations.ExistingKey(ctx)
	if err != nil {
		return true, ctrl.Result{}, r.refuseRestore(ctx, c, status, ref.String(), err)
	}
	file, err := store.Get(ctx, backup.FileName(ref.Snapshot))
	if errors.Is(err, backup.ErrNotFound) {
		return true, ctrl.Result{}, r.refuseRestore(ctx, c, status, ref.String(), fmt.Errorf("there is no snapshot %s of cluster %s/%s in %s; `lotse cluster backups %s` lists them", ref.Snapshot, ref.Namespace, ref.Cluster, store, ref.Cluster))
	}
	if err != nil {
		return true, ctrl.Result{}, r.retryRestore(ctx, c, status, fmt.Errorf("fetching the snapshot from %s: %w", store, err))
	}
	dir, err := r.Destinations.TempDir("lotse-restore-")
	if err != nil {
		file.Close()
		return true, ctrl.Result{}, err
	}
	defer os.RemoveAll(dir)
	contents, err := backup.Read(file, key, dir)
	file.Close()
	if errors.Is(err, backup.ErrCorrupt) || errors.Is(err, backup.ErrWrongKey) {
		return true, ctrl.Result{}, r.refuseRestore(ctx, c, status, ref.String(), fmt.Errorf("snapshot %s: %w", ref.Snapshot, err))
	}
	if err != nil {
		return true, ctrl.Result{}, r.retryRestore(ctx, c, status, fmt.Errorf("snapshot %s: %w", ref.Snapshot, err))
	}
	if err := checkSnapshotFits(c, status, contents.Manifest, ref, release); err != nil {
		return true, ctrl.Result{}, r.refuseRestore(ctx, c, status, ref.String(), err)
	}

	// From here the tenant's API goes away: stop what watches it.
	cref := refOf(c)
	if r.Addons != nil {
		r.Addons.Forget(cref.Key())
	}
	if r.Cloud != nil {
		r.Cloud.Stop(cref)
	}
	if r.Tenants != nil {
		r.Tenants.Forget(cref.Key())
	}
	start := time.Now()
	err = r.Backend.Restore(ctx, spec, controlplane.RestoreInput{Snapshot: contents.EtcdSnapshot, Credentials: contents.Credentials})
	if errors.Is(err, controlplane.ErrRestoreRefused) {
		return true, ctrl.Result{}, r.refuseRestore(ctx, c, status, ref.String(), err)
	}
	if err != nil {
		return true, ctrl.Result{}, r.retryRestore(ctx, c, status, err)
	}
	log.FromContext(ctx).Info("restore: etcd data replaced", "from", ref.String(), "took", time.Since(start).Round(time.Millisecond))
	status.Restore.Step = lotsev1.RestoreStepStarting
	status.Restore.Message = "starting the control plane on the restored data"
	status.Phase = lotsev1.PhaseRestoring
	if err := r.writeStatus(ctx, c, status); err != nil {
		return true, ctrl.Result{}, err
	}
	return false, ctrl.Result{}, nil
}

// checkSnapshotFits refuses snapshots that cannot go into this cluster.
func checkSnapshotFits(c *lotsev1.Cluster, status *lotsev1.ClusterStatus, m backup.Manifest, ref backup.Ref, release releases.Release) error {
	if m.UID != string(c.UID) && status.KubernetesVersion != "" {
		return fmt.Errorf("snapshot %s is of cluster %s/%s (uid %s), not of this one, which has data of its own; restore it into a new cluster: lotse cluster restore %s --from %s --into NEW", ref.Snapshot, m.Namespace, m.Name, m.UID, ref.Cluster, ref.Snapshot)
	}
	from, ferr := releases.ParseVersion(m.KubernetesVersion)
	to, terr := releases.ParseVersion(release.Version)
	switch {
	case ferr != nil || terr != nil:
		return fmt.Errorf("snapshot %s: Kubernetes version %q cannot be compared with the cluster's %s", ref.Snapshot, m.KubernetesVersion, release.Version)
	case from.Major != to.Major || from.Minor > to.Minor:
		return fmt.Errorf("snapshot %s was taken at Kubernetes %s, newer than this cluster's %s; set spec.kubernetes.version to %s or newer", ref.Snapshot, m.KubernetesVersion, release.Version, m.KubernetesVersion)
	case from.Minor+1 < to.Minor:
		return fmt.Errorf("snapshot %s was taken at Kubernetes %s, more than one minor before this cluster's %s (upgrades go one minor at a time); restore it into a cluster at 1.%d and upgrade that", ref.Snapshot, m.KubernetesVersion, release.Version, from.Minor+1)
	}
	// The snapshot's encryption keys come with it and keep decrypting
	// its data whatever provider the cluster uses now.
	return nil
}

// restoreRetry is how often a new cluster tries again to get the
// snapshot it is to start from.
const restoreRetry = time.Minute

// refuseRestore ends a restore that cannot be done; nothing was changed.
// A cluster that has run keeps running on its own data (the annotation
// goes); a new one, made to start from the snapshot, does not start
// empty: it stays Failed and tries again every minute, until the cause is
// fixed or the annotation removed.
func (r *Reconciler) refuseRestore(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus, from string, cause error) error {
	now := metav1.Now()
	start := &now
	if rs := status.Restore; rs != nil && rs.From == from && rs.Step == lotsev1.RestoreStepRestoring && rs.StartTime != nil {
		start = rs.StartTime // this attempt's start
	}
	fresh := status.KubernetesVersion == ""
	msg := "refused: " + cause.Error()
	if fresh {
		msg += fmt.Sprintf("; tried again every minute (remove annotation %s to create the cluster empty)", lotsev1.RestoreAnnotation)
		status.Phase = lotsev1.PhaseFailed
	} else if status.Phase == lotsev1.PhaseRestoring {
		status.Phase = lotsev1.PhaseUpdating
	}
	status.Restore = &lotsev1.RestoreStatus{From: from, Step: lotsev1.RestoreStepFailed, Message: msg, StartTime: start, CompletionTime: &now}
	r.event(c, corev1.EventTypeWarning, "RestoreRefused", "Restore", "restore from %s refused: %v", from, cause)
	metrics.RestoresTotal.WithLabelValues(c.Namespace, c.Name, "refused").Inc()
	if err := r.writeStatus(ctx, c, status); err != nil {
		return err
	}
	if fresh {
		return nil
	}
	return r.dropRestoreAnnotation(ctx, c)
}

// retryRestore reports a restore that failed on the way (the next
// reconcile tries again, with the controller's backoff).
func (r *Reconciler) retryRestore(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus, cause error) error {
	status.Restore.Message = "retrying: " + cause.Error()
	r.event(c, corev1.EventTypeWarning, "RestoreRetrying", "Restore", "%v", cause)
	if err := r.writeStatus(ctx, c, status); err != nil {
		return err
	}
	return cause
}

// finishRestore marks a restore whose control plane runs again done.
func (r *Reconciler) finishRestore(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus) error {
	if err := r.dropRestoreAnnotation(ctx, c); err != nil {
		return err
	}
	now := metav1.Now()
	status.Restore.Step, status.Restore.CompletionTime = lotsev1.RestoreStepSucceeded, &now
	took := now.Sub(status.Restore.StartTime.Time).Round(100 * time.Millisecond)
	status.Restore.Message = fmt.Sprintf("restored in %s", took)
	metrics.RestoresTotal.WithLabelValues(c.Namespace, c.Name, "success").Inc()
	// A prepared etcd-key rotation promised that every value is under the
	// new key; the restored data is not: rewrite it before the old key may go.
	if rs := *rotationOf(status, KindEtcdEncryptionKey, false); rs != nil && rs.Phase == lotsev1.RotationPrepared {
		rs.Phase, rs.Step = lotsev1.RotationPreparing, "rewrite"
		r.event(c, corev1.EventTypeNormal, "RotationResumed", "Restore", "the restored data is rewritten with the new encryption key before the rotation can complete")
	}
	r.event(c, corev1.EventTypeNormal, "Restored", "Restore", "etcd restored from %s; the control plane answers again (%s)", status.Restore.From, took)
	return nil
}

func (r *Reconciler) dropRestoreAnnotation(ctx context.Context, c *lotsev1.Cluster) error {
	if _, ok := c.Annotations[lotsev1.RestoreAnnotation]; !ok {
		return nil
	}
	// Only the request answered: a new one written since this reconcile
	// read the cluster stays, for the next.
	return patch.RemoveAnnotationIf(ctx, r.Client, c, lotsev1.RestoreAnnotation, c.Annotations[lotsev1.RestoreAnnotation])
}

// restoreSource is where the snapshot is read from: the cluster's own
// backup destination, or, when it names none, the destination of the
// cluster the snapshot is of (a restore into a new cluster whose creator
// may not set destinations).
func (r *Reconciler) restoreSource(ctx context.Context, c *lotsev1.Cluster, ref backup.Ref) (*lotsev1.BackupSpec, error) {
	own := c.Spec.Backup
	if (own != nil && (own.Directory != "" || own.S3 != nil)) || ref.Cluster == c.Name {
		return own, nil
	}
	source := &lotsev1.Cluster{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Cluster}, source); err != nil {
		if apierrors.IsNotFound(err) {
			return own, nil // gone: its snapshots are looked for where the cluster's own go
		}
		return nil, err
	}
	if source.Spec.Backup == nil {
		return own, nil
	}
	return source.Spec.Backup, nil
}
