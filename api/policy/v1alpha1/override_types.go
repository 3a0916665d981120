package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Override operators.
const (
	OverrideAdd     = "add"
	OverrideRemove  = "remove"
	OverrideReplace = "replace"
)

// Image components an ImageOverrider changes.
const (
	ImageRegistry   = "Registry"
	ImageRepository = "Repository"
	ImageTag        = "Tag"
)

// OverridePolicy changes the copies of the resources it selects in its
// own namespace, per member.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=op,categories=lotse
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type OverridePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec OverrideSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// OverridePolicyList is a list of OverridePolicies.
type OverridePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []OverridePolicy `json:"items"`
}

// ClusterOverridePolicy changes the copies of resources of any namespace,
// and of cluster-scoped resources. It applies before a namespace's own
// OverridePolicies, so theirs win.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=cop,categories=lotse
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterOverridePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec OverrideSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// ClusterOverridePolicyList is a list of ClusterOverridePolicies.
type ClusterOverridePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterOverridePolicy `json:"items"`
}

// OverrideSpec selects resources and says how their copies change.
type OverrideSpec struct {
	// ResourceSelectors pick the resources; none picks every resource the
	// policy may see.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	ResourceSelectors []ResourceSelector `json:"resourceSelectors,omitempty"`
	// OverrideRules apply in order, each to the members it targets.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	OverrideRules []RuleWithCluster `json:"overrideRules"`
}

// RuleWithCluster is a set of overriders for some members.
type RuleWithCluster struct {
	// TargetCluster selects the members; unset selects every member.
	// +optional
	TargetCluster *ClusterAffinity `json:"targetCluster,omitempty"`
	// Overriders apply in this order: image, command, args, labels,
	// annotations, plaintext (JSON patch).
	Overriders Overriders `json:"overriders"`
}

// Overriders change a copy.
type Overriders struct {
	// Plaintext is a JSON patch (RFC 6902) on the copy.
	// +optional
	Plaintext []PlaintextOverrider `json:"plaintext,omitempty"`
	// ImageOverrider changes the containers' images.
	// +optional
	ImageOverrider []ImageOverrider `json:"imageOverrider,omitempty"`
	// CommandOverrider changes a container's command.
	// +optional
	CommandOverrider []CommandArgsOverrider `json:"commandOverrider,omitempty"`
	// ArgsOverrider changes a container's args.
	// +optional
	ArgsOverrider []CommandArgsOverrider `json:"argsOverrider,omitempty"`
	// LabelsOverrider changes the copy's labels.
	// +optional
	LabelsOverrider []LabelAnnotationOverrider `json:"labelsOverrider,omitempty"`
	// AnnotationsOverrider changes the copy's annotations.
	// +optional
	AnnotationsOverrider []LabelAnnotationOverrider `json:"annotationsOverrider,omitempty"`
}

// PlaintextOverrider is one JSON patch operation.
type PlaintextOverrider struct {
	// Path is a JSON pointer, e.g. /spec/template/spec/containers/0/image.
	// +kubebuilder:validation:Pattern=`^/`
	Path string `json:"path"`
	// Operator: add, remove or replace.
	// +kubebuilder:validation:Enum=add;remove;replace
	Operator string `json:"operator"`
	// Value for add and replace.
	// +optional
	Value *apiextensionsv1.JSON `json:"value,omitempty"`
}

// ImageOverrider changes one component of container images.
type ImageOverrider struct {
	// Predicate picks the image by path (e.g.
	// /spec/template/spec/containers/0/image); unset picks every
	// container's and init container's image of the pod template.
	// +optional
	Predicate *ImagePredicate `json:"predicate,omitempty"`
	// Component: Registry, Repository or Tag.
	// +kubebuilder:validation:Enum=Registry;Repository;Tag
	Component string `json:"component"`
	// Operator: add (append the value to the component), remove, replace.
	// +kubebuilder:validation:Enum=add;remove;replace
	Operator string `json:"operator"`
	// Value for add and replace.
	// +optional
	Value string `json:"value,omitempty"`
}

// ImagePredicate picks an image by its JSON pointer.
type ImagePredicate struct {
	// +kubebuilder:validation:Pattern=`^/`
	Path string `json:"path"`
}

// CommandArgsOverrider adds to or removes from a container's command or
// args.
type CommandArgsOverrider struct {
	// ContainerName is the container.
	// +kubebuilder:validation:MinLength=1
	ContainerName string `json:"containerName"`
	// Operator: add (append) or remove (drop each given item).
	// +kubebuilder:validation:Enum=add;remove
	Operator string `json:"operator"`
	// Value are the items.
	// +optional
	Value []string `json:"value,omitempty"`
}

// LabelAnnotationOverrider changes labels or annotations.
type LabelAnnotationOverrider struct {
	// Operator: add, remove or replace (replace changes only keys that
	// exist).
	// +kubebuilder:validation:Enum=add;remove;replace
	Operator string `json:"operator"`
	// Value: the keys and values.
	// +optional
	Value map[string]string `json:"value,omitempty"`
}
