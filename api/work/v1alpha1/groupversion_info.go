// Package v1alpha1 holds the bindings of a fleet's control plane (group
// work.lotse.dev): for each propagated resource, where it went, with how
// many replicas, and how it is doing in each member. They follow Karmada's
// ResourceBinding.
//
// +kubebuilder:object:generate=true
// +groupName=work.lotse.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of the bindings.
	GroupVersion = schema.GroupVersion{Group: "work.lotse.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&ResourceBinding{}, &ResourceBindingList{}, &ClusterResourceBinding{}, &ClusterResourceBindingList{}, &Work{}, &WorkList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
