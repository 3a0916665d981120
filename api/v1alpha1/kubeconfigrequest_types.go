package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KubeconfigRole is what a requested kubeconfig may do in the cluster.
// +kubebuilder:validation:Enum=admin;viewer
type KubeconfigRole string

// Roles of a requested kubeconfig.
const (
	// KubeconfigAdmin: cluster-admin in the cluster (group
	// lotse:cluster-admins). Only who may update the Cluster gets one.
	KubeconfigAdmin KubeconfigRole = "admin"
	// KubeconfigViewer: the upstream view role (group
	// lotse:cluster-viewers): read most objects, no Secrets.
	KubeconfigViewer KubeconfigRole = "viewer"
)

// ConditionIssued: the certificate is in status (True), or why not (False).
const ConditionIssued = "Issued"

// KubeconfigRequest asks for a short-lived client certificate of a
// cluster, for the one who creates it: project members get kubeconfigs
// without reading the cluster's admin kubeconfig. The requester makes the
// key and sends only a certificate request; the cluster signs it through
// its certificates API. Like Gardener's shoots/adminkubeconfig and
// shoots/viewerkubeconfig.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=lotse
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="User",type=string,JSONPath=`.spec.user`
// +kubebuilder:printcolumn:name="Role",type=string,JSONPath=`.spec.role`
// +kubebuilder:printcolumn:name="Issued",type=string,JSONPath=`.status.conditions[?(@.type=="Issued")].status`
// +kubebuilder:printcolumn:name="Expires",type=date,JSONPath=`.status.expirationTimestamp`
type KubeconfigRequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   KubeconfigRequestSpec   `json:"spec"`
	Status KubeconfigRequestStatus `json:"status,omitempty"`
}

// KubeconfigRequestSpec is the request; it cannot change once made.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec of a KubeconfigRequest cannot change; make a new request"
type KubeconfigRequestSpec struct {
	// Cluster in the request's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Cluster string `json:"cluster"`
	// User the certificate names: the requester's own name on the
	// management API (checked at admission).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	User string `json:"user"`
	// Role in the cluster.
	// +kubebuilder:default=viewer
	// +optional
	Role KubeconfigRole `json:"role,omitempty"`
	// ExpirationSeconds is the certificate's lifetime: 600 (10 minutes)
	// to 604800 (a week).
	// +kubebuilder:validation:Minimum=600
	// +kubebuilder:validation:Maximum=604800
	ExpirationSeconds int32 `json:"expirationSeconds"`
	// CertificateSigningRequest is a PEM CERTIFICATE REQUEST for CN=user
	// and O=the role's group (lotse:cluster-admins or
	// lotse:cluster-viewers). The key stays with the requester.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=8192
	CertificateSigningRequest string `json:"certificateSigningRequest"`
}

// KubeconfigRequestStatus carries the certificate and what a kubeconfig
// needs besides the requester's key.
type KubeconfigRequestStatus struct {
	// Certificate is the signed client certificate (PEM).
	// +optional
	Certificate string `json:"certificate,omitempty"`
	// Server is the cluster's API endpoint.
	// +optional
	Server string `json:"server,omitempty"`
	// CertificateAuthority is the PEM bundle that verifies the server.
	// +optional
	CertificateAuthority string `json:"certificateAuthority,omitempty"`
	// ExpirationTimestamp is when the certificate ends. The request is
	// deleted an hour after.
	// +optional
	ExpirationTimestamp *metav1.Time `json:"expirationTimestamp,omitempty"`
	// Conditions: Issued.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true

// KubeconfigRequestList is a list of KubeconfigRequests.
type KubeconfigRequestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KubeconfigRequest `json:"items"`
}
