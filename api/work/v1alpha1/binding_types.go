package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Condition types of bindings.
const (
	// ConditionScheduled: the resource's members and replicas are chosen.
	ConditionScheduled = "Scheduled"
	// ConditionFullyApplied: every chosen member carries the resource.
	ConditionFullyApplied = "FullyApplied"
)

// Health of a resource in one member.
const (
	HealthHealthy   = "Healthy"
	HealthUnhealthy = "Unhealthy"
	HealthUnknown   = "Unknown"
)

// ResourceBinding records where a namespaced resource of the fleet went.
// Lotse writes it; its name is the resource's name and kind.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=rb,categories=lotse
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.resource.kind`
// +kubebuilder:printcolumn:name="Scheduled",type=string,JSONPath=`.status.conditions[?(@.type=="Scheduled")].status`
// +kubebuilder:printcolumn:name="Applied",type=string,JSONPath=`.status.conditions[?(@.type=="FullyApplied")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ResourceBinding struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BindingSpec   `json:"spec"`
	Status BindingStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ResourceBindingList is a list of ResourceBindings.
type ResourceBindingList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ResourceBinding `json:"items"`
}

// ClusterResourceBinding records where a cluster-scoped resource went.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=crb,categories=lotse
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.resource.kind`
// +kubebuilder:printcolumn:name="Scheduled",type=string,JSONPath=`.status.conditions[?(@.type=="Scheduled")].status`
// +kubebuilder:printcolumn:name="Applied",type=string,JSONPath=`.status.conditions[?(@.type=="FullyApplied")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterResourceBinding struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BindingSpec   `json:"spec"`
	Status BindingStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ClusterResourceBindingList is a list of ClusterResourceBindings.
type ClusterResourceBindingList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterResourceBinding `json:"items"`
}

// BindingSpec is the placement of one resource.
type BindingSpec struct {
	// Resource is the template in the fleet.
	Resource ObjectReference `json:"resource"`
	// Replicas is the template's replica count (0 for resources without).
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// Clusters are the members the resource goes to, with their replicas.
	// +optional
	Clusters []TargetCluster `json:"clusters,omitempty"`
	// PolicyRef is the policy that placed it ("" namespace: a cluster
	// policy); empty for namespaces, which go to every member, and for
	// dependencies, which follow their workloads.
	// +optional
	PolicyRef *PolicyReference `json:"policyRef,omitempty"`
	// ConflictResolution copied from the policy: Abort or Overwrite.
	// +optional
	ConflictResolution string `json:"conflictResolution,omitempty"`
	// PropagateDeps copied from the policy: what the workload refers to
	// goes where it goes.
	// +optional
	PropagateDeps bool `json:"propagateDeps,omitempty"`
	// RequiredBy lists the workloads whose policies propagate their
	// dependencies (propagateDeps) and that refer to this resource: it
	// goes where they go.
	// +optional
	RequiredBy []BindingSnapshot `json:"requiredBy,omitempty"`
}

// BindingSnapshot is a workload's binding and where it placed the
// workload.
type BindingSnapshot struct {
	// Namespace and Name of the workload's binding.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Clusters are the members the workload went to.
	// +optional
	Clusters []TargetCluster `json:"clusters,omitempty"`
}

// ObjectReference points at a resource of the fleet.
type ObjectReference struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// +optional
	UID string `json:"uid,omitempty"`
	// +optional
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// PolicyReference names the policy of a binding.
type PolicyReference struct {
	// Kind: PropagationPolicy or ClusterPropagationPolicy.
	Kind string `json:"kind"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// TargetCluster is one member and its share of the replicas.
type TargetCluster struct {
	Name string `json:"name"`
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
}

// BindingStatus is how the resource does in its members.
type BindingStatus struct {
	// ObservedGeneration is the binding generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Scheduled, FullyApplied.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// AggregatedStatus holds the resource's state in each member that
	// carries it.
	// +optional
	AggregatedStatus []AggregatedStatusItem `json:"aggregatedStatus,omitempty"`
}

// AggregatedStatusItem is the resource in one member.
type AggregatedStatusItem struct {
	// ClusterName is the member.
	ClusterName string `json:"clusterName"`
	// Applied says whether the member carries the current template;
	// AppliedMessage says why not.
	Applied bool `json:"applied"`
	// +optional
	AppliedMessage string `json:"appliedMessage,omitempty"`
	// Health: Healthy, Unhealthy or Unknown.
	// +optional
	Health string `json:"health,omitempty"`
	// Status is the member object's .status.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +optional
	Status *runtime.RawExtension `json:"status,omitempty"`
}
