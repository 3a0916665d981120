package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Credential rotation operations (annotation lotse.dev/operation), as
// Gardener's: "-start" runs phase 1 (new credentials added and used, old
// ones still accepted), "-complete" phase 2 (old ones removed). Each kind
// has its own pair; rotate-credentials-* does every kind.
const (
	OperationRotateCredentialsStart       = "rotate-credentials-start"
	OperationRotateCredentialsComplete    = "rotate-credentials-complete"
	OperationRotateServiceAccountKeyStart = "rotate-service-account-key-start"
	OperationRotateServiceAccountKeyDone  = "rotate-service-account-key-complete"
	OperationRotateEtcdEncryptionKeyStart = "rotate-etcd-encryption-key-start"
	OperationRotateEtcdEncryptionKeyDone  = "rotate-etcd-encryption-key-complete"
	OperationRotateCAStart                = "rotate-ca-start"
	OperationRotateCADone                 = "rotate-ca-complete"
)

// Rotation phases.
const (
	RotationPreparing  = "Preparing"
	RotationPrepared   = "Prepared"
	RotationCompleting = "Completing"
	RotationCompleted  = "Completed"
)

// CredentialsStatus reports the cluster's credentials.
type CredentialsStatus struct {
	// Rotation is where each kind of credential is in its rotation.
	// +optional
	Rotation CredentialsRotation `json:"rotation,omitempty"`
}

// CredentialsRotation has one entry per kind of credential.
type CredentialsRotation struct {
	// ServiceAccountKey signs service-account tokens.
	// +optional
	ServiceAccountKey *RotationStatus `json:"serviceAccountKey,omitempty"`
	// EtcdEncryptionKey encrypts resources at rest.
	// +optional
	EtcdEncryptionKey *RotationStatus `json:"etcdEncryptionKey,omitempty"`
	// CertificateAuthorities is the cluster CA: it signs the API server's
	// serving certificate and every client certificate (kubeconfigs,
	// kubelets).
	// +optional
	CertificateAuthorities *RotationStatus `json:"certificateAuthorities,omitempty"`
}

// RotationStatus is one credential's rotation.
type RotationStatus struct {
	// Phase: Preparing (phase 1 runs), Prepared (new and old accepted),
	// Completing (phase 2 runs), Completed (only the new one is left).
	Phase string `json:"phase"`
	// Step is what the current phase does now.
	// +optional
	Step string `json:"step,omitempty"`
	// +optional
	LastInitiationTime *metav1.Time `json:"lastInitiationTime,omitempty"`
	// +optional
	LastInitiationFinishedTime *metav1.Time `json:"lastInitiationFinishedTime,omitempty"`
	// +optional
	LastCompletionTriggeredTime *metav1.Time `json:"lastCompletionTriggeredTime,omitempty"`
	// +optional
	LastCompletionTime *metav1.Time `json:"lastCompletionTime,omitempty"`
}
