package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Replica scheduling types.
const (
	// ReplicaSchedulingDuplicated: every selected member gets the
	// template's full replica count.
	ReplicaSchedulingDuplicated = "Duplicated"
	// ReplicaSchedulingDivided: the replicas are divided among the
	// selected members.
	ReplicaSchedulingDivided = "Divided"

	// DivisionAggregated puts the replicas on as few members as possible.
	DivisionAggregated = "Aggregated"
	// DivisionWeighted divides by weight (static, or dynamic by available
	// capacity).
	DivisionWeighted = "Weighted"

	// DynamicWeightAvailableReplicas weighs each member by how many
	// replicas of the workload its free capacity holds.
	DynamicWeightAvailableReplicas = "AvailableReplicas"

	// ConflictAbort leaves an object that already exists in a member, and
	// was not made by the fleet, alone (and says so in the binding).
	ConflictAbort = "Abort"
	// ConflictOverwrite takes such an object over.
	ConflictOverwrite = "Overwrite"
)

// PropagationPolicy places the resources it selects in its own namespace
// on members of the fleet.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=pp,categories=lotse
// +kubebuilder:printcolumn:name="Conflict",type=string,JSONPath=`.spec.conflictResolution`
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PropagationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec PropagationSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// PropagationPolicyList is a list of PropagationPolicies.
type PropagationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PropagationPolicy `json:"items"`
}

// ClusterPropagationPolicy places resources of any namespace, and
// cluster-scoped resources; a namespace's own PropagationPolicy wins over
// it.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=cpp,categories=lotse
// +kubebuilder:printcolumn:name="Conflict",type=string,JSONPath=`.spec.conflictResolution`
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterPropagationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec PropagationSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// ClusterPropagationPolicyList is a list of ClusterPropagationPolicies.
type ClusterPropagationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterPropagationPolicy `json:"items"`
}

// PropagationSpec says which resources go where.
type PropagationSpec struct {
	// ResourceSelectors pick the resources the policy places; a resource
	// matching any of them is placed.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	ResourceSelectors []ResourceSelector `json:"resourceSelectors"`

	// PropagateDeps sends the ConfigMaps, Secrets, ServiceAccounts and
	// PersistentVolumeClaims a selected workload refers to to the same
	// members.
	// +optional
	PropagateDeps bool `json:"propagateDeps,omitempty"`

	// Placement says which members get the resources and how replicas
	// are shared.
	// +optional
	Placement Placement `json:"placement,omitempty"`

	// Priority decides between policies that select the same resource:
	// the highest wins, then the one whose name sorts first.
	// +kubebuilder:default=0
	// +optional
	Priority *int32 `json:"priority,omitempty"`

	// ConflictResolution: what to do with an object that already exists
	// in a member and was not made by the fleet. Abort (default) leaves
	// it and reports the conflict; Overwrite takes it over.
	// +kubebuilder:validation:Enum=Abort;Overwrite
	// +kubebuilder:default=Abort
	// +optional
	ConflictResolution string `json:"conflictResolution,omitempty"`
}

// ResourceSelector picks resources by kind and by name, namespace or
// labels.
// +kubebuilder:validation:XValidation:rule="!has(self.name) || !has(self.labelSelector)",message="a resource selector names a resource or selects by labels, not both (labelSelector is ignored in Karmada when name is set; Lotse refuses the ambiguity)"
type ResourceSelector struct {
	// APIVersion of the resources, e.g. "apps/v1".
	// +kubebuilder:validation:MinLength=1
	APIVersion string `json:"apiVersion"`
	// Kind of the resources, e.g. "Deployment".
	// +kubebuilder:validation:MinLength=1
	Kind string `json:"kind"`
	// Namespace of the resources (a ClusterPropagationPolicy only; a
	// PropagationPolicy selects in its own namespace). Empty: any.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Name of the resource. Empty: any.
	// +optional
	Name string `json:"name,omitempty"`
	// LabelSelector filters the resources by label.
	// +optional
	LabelSelector *metav1.LabelSelector `json:"labelSelector,omitempty"`
}

// Taint keys a member carries while it is not ready; placement
// tolerations name them.
const (
	// TaintMemberNotReady: the member answers but runs no Ready node, or
	// does not answer at all.
	TaintMemberNotReady = "cluster.lotse.dev/not-ready"
	// DefaultTolerationSeconds is how long a member may be not ready
	// before it loses its share, when no toleration says otherwise.
	DefaultTolerationSeconds = 30
)

// Placement selects members and shares replicas among them.
type Placement struct {
	// ClusterTolerations say how long a placement stays on a member that
	// is not ready (taint cluster.lotse.dev/not-ready, effect NoExecute)
	// before its share moves to the other members. Without a toleration
	// for that taint, it moves after 30 seconds; a toleration without
	// tolerationSeconds keeps it there.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	ClusterTolerations []corev1.Toleration `json:"clusterTolerations,omitempty"`
	// ClusterAffinity selects the members; unset selects every member.
	// +optional
	ClusterAffinity *ClusterAffinity `json:"clusterAffinity,omitempty"`
	// ReplicaScheduling shares the replicas of a workload (spec.replicas)
	// among the selected members; unset duplicates them.
	// +optional
	ReplicaScheduling *ReplicaSchedulingStrategy `json:"replicaScheduling,omitempty"`
	// SpreadConstraints bound how many groups of members (members
	// themselves, or their regions, zones, providers or a label's values)
	// the resource goes to, as Karmada's spreadConstraints do: fewer
	// groups than minGroups among the selected members fails the
	// placement; more than maxGroups keeps those with the most room.
	// +kubebuilder:validation:MaxItems=4
	// +listType=atomic
	// +optional
	SpreadConstraints []SpreadConstraint `json:"spreadConstraints,omitempty"`
}

// SpreadField is a member property to spread by.
// +kubebuilder:validation:Enum=cluster;region;zone;provider
type SpreadField string

// The fields a spread constraint groups members by.
const (
	SpreadByCluster  SpreadField = "cluster"
	SpreadByRegion   SpreadField = "region"
	SpreadByZone     SpreadField = "zone"
	SpreadByProvider SpreadField = "provider"
)

// SpreadConstraint groups the selected members by a field or a label and
// bounds the number of groups used.
// +kubebuilder:validation:XValidation:rule="has(self.spreadByField) != has(self.spreadByLabel)",message="set exactly one of spreadByField and spreadByLabel"
// +kubebuilder:validation:XValidation:rule="!has(self.maxGroups) || !has(self.minGroups) || self.minGroups <= self.maxGroups",message="minGroups must not exceed maxGroups"
type SpreadConstraint struct {
	// SpreadByField groups by cluster (each member its own group),
	// region, zone or provider. Members without the field are left out.
	// +optional
	SpreadByField SpreadField `json:"spreadByField,omitempty"`
	// SpreadByLabel groups by the value of a FleetMember label. Members
	// without the label are left out.
	// +kubebuilder:validation:MaxLength=317
	// +optional
	SpreadByLabel string `json:"spreadByLabel,omitempty"`
	// MaxGroups is the most groups the resource goes to (0: no bound).
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxGroups int32 `json:"maxGroups,omitempty"`
	// MinGroups is the fewest groups the resource must go to; fewer
	// available groups fail the placement (the template reports it).
	// +kubebuilder:validation:Minimum=0
	// +optional
	MinGroups int32 `json:"minGroups,omitempty"`
}

// ClusterAffinity selects members. A member must match every part that is
// set; exclude wins over everything.
type ClusterAffinity struct {
	// LabelSelector matches the FleetMembers' labels.
	// +optional
	LabelSelector *metav1.LabelSelector `json:"labelSelector,omitempty"`
	// FieldSelector matches the members' region, zone and provider.
	// +optional
	FieldSelector *FieldSelector `json:"fieldSelector,omitempty"`
	// ClusterNames lists the members by name.
	// +optional
	ClusterNames []string `json:"clusterNames,omitempty"`
	// Exclude lists members that are never selected.
	// +optional
	Exclude []string `json:"exclude,omitempty"`
}

// FieldSelector matches members' fields.
type FieldSelector struct {
	// MatchExpressions must all hold.
	// +kubebuilder:validation:MaxItems=16
	MatchExpressions []FieldSelectorRequirement `json:"matchExpressions,omitempty"`
}

// FieldSelectorRequirement is one condition on a member's field.
type FieldSelectorRequirement struct {
	// Key is the field: provider, region or zone.
	// +kubebuilder:validation:Enum=provider;region;zone
	Key string `json:"key"`
	// Operator: In, NotIn, Exists or DoesNotExist.
	// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist
	Operator string `json:"operator"`
	// Values for In and NotIn.
	// +optional
	Values []string `json:"values,omitempty"`
}

// ReplicaSchedulingStrategy shares a workload's replicas.
// +kubebuilder:validation:XValidation:rule="!has(self.weightPreference) || !has(self.weightPreference.staticWeightList) || size(self.weightPreference.staticWeightList) == 0 || self.weightPreference.staticWeightList.exists(w, w.weight > 0)",message="placement.replicaScheduling.weightPreference.staticWeightList: the weights sum to 0; give at least one member a weight above 0"
type ReplicaSchedulingStrategy struct {
	// ReplicaSchedulingType: Divided (default, as in Karmada) or
	// Duplicated. A placement without replicaScheduling duplicates.
	// +kubebuilder:validation:Enum=Duplicated;Divided
	// +kubebuilder:default=Divided
	// +optional
	ReplicaSchedulingType string `json:"replicaSchedulingType,omitempty"`
	// ReplicaDivisionPreference (Divided only): Weighted (default) or
	// Aggregated.
	// +kubebuilder:validation:Enum=Aggregated;Weighted
	// +optional
	ReplicaDivisionPreference string `json:"replicaDivisionPreference,omitempty"`
	// WeightPreference gives the weights of Weighted division; unset
	// weighs every member the same.
	// +optional
	WeightPreference *ClusterPreferences `json:"weightPreference,omitempty"`
}

// ClusterPreferences weigh members.
type ClusterPreferences struct {
	// StaticWeightList gives members fixed weights; a member that no entry
	// matches gets none of the replicas.
	// +optional
	StaticWeightList []StaticClusterWeight `json:"staticWeightList,omitempty"`
	// DynamicWeight weighs by a live figure: AvailableReplicas.
	// +kubebuilder:validation:Enum=AvailableReplicas
	// +optional
	DynamicWeight string `json:"dynamicWeight,omitempty"`
}

// StaticClusterWeight is the weight of the members an affinity selects.
type StaticClusterWeight struct {
	// TargetCluster selects the members the weight applies to.
	TargetCluster ClusterAffinity `json:"targetCluster"`
	// Weight of each selected member.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	Weight int64 `json:"weight"`
}
