// Package v1alpha1 holds the policies of a fleet's control plane (group
// policy.lotse.dev): where resources go and how they change on the way.
// Their fields follow Karmada's policy.karmada.io/v1alpha1 where the
// concept is the same, so Karmada manifests carry over by changing the
// apiVersion.
//
// +kubebuilder:object:generate=true
// +groupName=policy.lotse.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of the policies.
	GroupVersion = schema.GroupVersion{Group: "policy.lotse.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&PropagationPolicy{}, &PropagationPolicyList{}, &ClusterPropagationPolicy{}, &ClusterPropagationPolicyList{},
		&OverridePolicy{}, &OverridePolicyList{}, &ClusterOverridePolicy{}, &ClusterOverridePolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
