// Package v1alpha1 holds Lotse's API types (group lotse.dev, version v1alpha1).
//
// +kubebuilder:object:generate=true
// +groupName=lotse.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of Lotse's API.
	GroupVersion = schema.GroupVersion{Group: "lotse.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
