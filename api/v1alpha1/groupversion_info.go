// Package v1alpha1 holds Lotse's API types (group lotse.dev, version v1alpha1).
//
// +kubebuilder:object:generate=true
// +groupName=lotse.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of Lotse's API.
	GroupVersion = schema.GroupVersion{Group: "lotse.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Cluster{}, &ClusterList{}, &Machine{}, &MachineList{}, &Fleet{}, &FleetList{}, &FleetMember{}, &FleetMemberList{}, &Project{}, &ProjectList{}, &KubeconfigRequest{}, &KubeconfigRequestList{}, &Seed{}, &SeedList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
