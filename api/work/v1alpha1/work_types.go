package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// ConditionApplied: the Work's manifests are applied in its member (a
// Work's condition).
const ConditionApplied = "Applied"

// WorkFinalizer keeps a Work until its member's agent removed what it
// applied.
const WorkFinalizer = "work.lotse.dev/cleanup"

// LabelMember on a Work names the member it is for.
const LabelMember = "work.lotse.dev/member"

// ExecutionNamespacePrefix starts the namespace in a fleet's API that
// holds the Works of one pull-mode member (and its agent's Lease), as
// Karmada's karmada-es-MEMBER.
const ExecutionNamespacePrefix = "lotse-es-"

// ExecutionNamespace is the namespace of a pull-mode member's Works.
func ExecutionNamespace(member string) string { return ExecutionNamespacePrefix + member }

// AgentLeaseName is the Lease in a member's execution namespace that its
// agent renews: the fleet's sign that the member is there.
const AgentLeaseName = "agent"

// Annotations the agent keeps on its Lease: what the fleet knows of a
// member it cannot reach.
const (
	// AnnotationKubernetesVersion is the member API server's version.
	AnnotationKubernetesVersion = "work.lotse.dev/kubernetes-version"
	// AnnotationNodes is "READY/TOTAL": the member's Ready nodes and all.
	AnnotationNodes = "work.lotse.dev/nodes"
	// AnnotationZone is the zone of the member's first node.
	AnnotationZone = "work.lotse.dev/zone"
	// AnnotationRoom is the member's room as JSON, {"allocatable": {...},
	// "allocated": {...}} (a FleetMember's status.resourceSummary).
	AnnotationRoom = "work.lotse.dev/room"
)

// AgentUser is the user name of a member's agent in its fleet: its
// client certificate's common name.
func AgentUser(member string) string { return "system:lotse:fleet-agent:" + member }

// Work is what one pull-mode member applies: the copy of one template
// the fleet rendered for it (replicas, overrides and marks included). The
// member's agent, which reaches the fleet's API and not the other way
// round, applies it and reports the object's status back, as Karmada's
// Work.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=lotse
// +kubebuilder:printcolumn:name="Applied",type=string,JSONPath=`.status.conditions[?(@.type=="Applied")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Work struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   WorkSpec   `json:"spec"`
	Status WorkStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// WorkList is a list of Works.
type WorkList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Work `json:"items"`
}

// WorkSpec is what to apply.
type WorkSpec struct {
	// Workload holds the manifests.
	Workload WorkloadTemplate `json:"workload"`
	// ConflictResolution: Abort (default: an object the fleet did not
	// make is left alone) or Overwrite.
	// +kubebuilder:validation:Enum=Abort;Overwrite
	// +optional
	ConflictResolution string `json:"conflictResolution,omitempty"`
}

// WorkloadTemplate holds the manifests of a Work.
type WorkloadTemplate struct {
	// Manifests are whole objects, applied in order.
	// +kubebuilder:validation:MinItems=1
	Manifests []Manifest `json:"manifests"`
}

// Manifest is one object.
type Manifest struct {
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:EmbeddedResource
	runtime.RawExtension `json:",inline"`
}

// WorkStatus is how the manifests are doing in the member.
type WorkStatus struct {
	// Conditions: Applied (its observedGeneration is the Work's
	// generation the agent applied).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ManifestStatuses holds each applied object's state.
	// +optional
	ManifestStatuses []ManifestStatus `json:"manifestStatuses,omitempty"`
}

// ManifestStatus is one applied object in the member.
type ManifestStatus struct {
	Identifier ResourceIdentifier `json:"identifier"`
	// Generation and ResourceVersion of the member's object, so that the
	// fleet can tell whether its status describes its current spec.
	// +optional
	Generation int64 `json:"generation,omitempty"`
	// +optional
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Status is the member object's .status.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	Status *runtime.RawExtension `json:"status,omitempty"`
	// Health: Healthy, Unhealthy or Unknown.
	// +optional
	Health string `json:"health,omitempty"`
	// Addresses, for a Service, are where the fleet's DNS sends clients
	// of this member's copy: its load-balancer ingress IPs, or for a
	// NodePort or LoadBalancer Service without them its Ready nodes'
	// internal addresses; none while no ready endpoint is behind it.
	// +optional
	Addresses []string `json:"addresses,omitempty"`
}

// ResourceIdentifier names a manifest's object.
type ResourceIdentifier struct {
	// Ordinal is the manifest's index in spec.workload.manifests.
	Ordinal int `json:"ordinal"`
	// +optional
	Group   string `json:"group,omitempty"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}
