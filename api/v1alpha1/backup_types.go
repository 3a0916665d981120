package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// OperationBackup takes an etcd snapshot of the cluster now (`lotse
// cluster backup`), whether or not spec.backup has a schedule.
const OperationBackup = "backup"

// RestoreAnnotation asks Lotse to restore the cluster's etcd from a
// snapshot: "SNAPSHOT" (one of this cluster's, in place) or
// "NAMESPACE/CLUSTER/SNAPSHOT" (another cluster's, only for a new cluster
// that has never run: `lotse cluster restore --into`). Lotse removes it
// once the restore succeeded or was refused; status.restore says which.
const RestoreAnnotation = "lotse.dev/restore-from"

// PhaseRestoring: the control plane is stopped while its etcd data is
// replaced from a snapshot.
const PhaseRestoring ClusterPhase = "Restoring"

// BackupSpec says when etcd snapshots of the cluster are taken and where
// they are kept. A snapshot holds the etcd data and, beside it, the
// cluster's certificates and encryption keys; the file is encrypted with
// the manager's backup key (Secret lotse-system/lotse-backup-key).
// +kubebuilder:validation:XValidation:rule="!(has(self.directory) && has(self.s3))",message="spec.backup: set directory or s3, not both"
type BackupSpec struct {
	// Schedule in cron syntax (minute hour day-of-month month
	// day-of-week, e.g. "0 */6 * * *"), in location's time zone. Empty:
	// snapshots only on demand (`lotse cluster backup`).
	// +kubebuilder:validation:MaxLength=100
	// +optional
	Schedule string `json:"schedule,omitempty"`
	// Location is the IANA time zone of the schedule (default UTC).
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Location string `json:"location,omitempty"`
	// Retention is how many snapshots are kept; the oldest go first.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=7
	// +optional
	Retention int32 `json:"retention,omitempty"`
	// Directory on the manager's host where snapshots are kept, in
	// NAMESPACE/CLUSTER below it. Default: backups/ in the manager's
	// state directory.
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="spec.backup.directory must be an absolute path"
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Directory string `json:"directory,omitempty"`
	// S3 keeps the snapshots in a bucket of any S3-compatible store
	// instead of a directory.
	// +optional
	S3 *S3BackupDestination `json:"s3,omitempty"`
}

// S3BackupDestination is a bucket of an S3-compatible object store.
type S3BackupDestination struct {
	// Endpoint is the store's URL: https://HOST[:PORT] (http:// only
	// for a store on this machine's loopback).
	// +kubebuilder:validation:Pattern=`^https?://[^/]+/?$`
	// +kubebuilder:validation:MaxLength=512
	Endpoint string `json:"endpoint"`
	// Bucket must exist.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=63
	Bucket string `json:"bucket"`
	// Prefix is prepended to the keys (NAMESPACE/CLUSTER/ follows it).
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// Region of the bucket, if the store needs one.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Region string `json:"region,omitempty"`
	// CredentialsSecretRef names a Secret in the cluster's namespace with
	// the keys accessKeyID and secretAccessKey, and optionally ca.crt
	// (PEM) for a store whose certificate a public CA did not sign.
	CredentialsSecretRef SecretReference `json:"credentialsSecretRef"`
}

// SecretReference names a Secret in the same namespace.
type SecretReference struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// BackupStatus reports the cluster's snapshots.
type BackupStatus struct {
	// Destination is where the snapshots are kept (without credentials).
	// +optional
	Destination string `json:"destination,omitempty"`
	// Snapshots at the destination, oldest first.
	// +optional
	Snapshots []SnapshotStatus `json:"snapshots,omitempty"`
	// LastSnapshot is the newest snapshot taken.
	// +optional
	LastSnapshot string `json:"lastSnapshot,omitempty"`
	// LastSuccessTime is when the newest snapshot was taken.
	// +optional
	LastSuccessTime *metav1.Time `json:"lastSuccessTime,omitempty"`
	// LastFailureTime is when a backup last failed, LastError why; the
	// error is cleared by the next success.
	// +optional
	LastFailureTime *metav1.Time `json:"lastFailureTime,omitempty"`
	// +optional
	LastError string `json:"lastError,omitempty"`
	// NextScheduled is when the schedule takes the next snapshot.
	// +optional
	NextScheduled *metav1.Time `json:"nextScheduled,omitempty"`
	// Schedule is the schedule (and time zone) NextScheduled follows.
	// +optional
	Schedule string `json:"schedule,omitempty"`
}

// SnapshotStatus is one kept snapshot.
type SnapshotStatus struct {
	// Name is what `lotse cluster restore --from` takes.
	Name string `json:"name"`
	// Time the snapshot was taken.
	Time metav1.Time `json:"time"`
	// Size of the encrypted file in bytes.
	Size int64 `json:"size"`
}

// RestoreStatus reports the latest restore.
type RestoreStatus struct {
	// From is the snapshot: NAMESPACE/CLUSTER/SNAPSHOT.
	From string `json:"from"`
	// Step is Restoring, Starting, Succeeded or Failed.
	Step string `json:"step"`
	// Message says what happens or why the restore was refused.
	// +optional
	Message string `json:"message,omitempty"`
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// Restore steps.
const (
	RestoreStepRestoring = "Restoring"
	RestoreStepStarting  = "Starting"
	RestoreStepSucceeded = "Succeeded"
	RestoreStepFailed    = "Failed"
)
