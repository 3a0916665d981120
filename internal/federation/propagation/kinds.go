package propagation

import (
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Kind is a resource kind the engine propagates.
type Kind struct {
	GVR        schema.GroupVersionResource
	Kind       string
	Namespaced bool
	// Replicas: the kind's spec.replicas is shared by the policy's
	// replica scheduling.
	Replicas bool
	// Custom: the kind is defined by a CustomResourceDefinition in the
	// fleet (see custom.go); members learn it from the CRD's copy.
	Custom bool
	// Versions are a custom kind's served versions: a selector may name
	// any of them (GVR has the storage version, which copies are made at).
	Versions []string
}

// served reports whether a selector's apiVersion names the kind: its
// own, or for a custom kind any version its CRD serves.
func (k Kind) served(apiVersion string) bool {
	if apiVersion == k.APIVersion() {
		return true
	}
	if !k.Custom {
		return false
	}
	group, version, ok := strings.Cut(apiVersion, "/")
	return ok && group == k.GVR.Group && slices.Contains(k.Versions, version)
}

// ID names the kind in the engine's queue and records: its Kind for the
// built-in kinds, Kind.group for a custom one (whose Kind may be that of
// a built-in kind in another group).
func (k Kind) ID() string {
	if !k.Custom {
		return k.Kind
	}
	return k.Kind + "." + k.GVR.Group
}

// APIVersion is the kind's apiVersion string.
func (k Kind) APIVersion() string { return k.GVR.GroupVersion().String() }

func gvr(group, version, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
}

// Kinds are the built-in kinds a fleet propagates: the ordinary ones of
// an application, and CustomResourceDefinitions (whose objects the engine
// then propagates too). Namespaces go to every ready member unless
// labelled lotse.dev/propagate: "false"; the other kinds go where a policy
// says. Copies are removed in the reverse order: a CRD after every other
// kind, just before the namespaces.
var Kinds = []Kind{
	{GVR: gvr("", "v1", "namespaces"), Kind: "Namespace"},
	{GVR: crdGVR, Kind: "CustomResourceDefinition"},
	{GVR: gvr("", "v1", "configmaps"), Kind: "ConfigMap", Namespaced: true},
	{GVR: gvr("", "v1", "secrets"), Kind: "Secret", Namespaced: true},
	{GVR: gvr("", "v1", "serviceaccounts"), Kind: "ServiceAccount", Namespaced: true},
	{GVR: gvr("", "v1", "services"), Kind: "Service", Namespaced: true},
	{GVR: gvr("", "v1", "persistentvolumeclaims"), Kind: "PersistentVolumeClaim", Namespaced: true},
	{GVR: gvr("apps", "v1", "deployments"), Kind: "Deployment", Namespaced: true, Replicas: true},
	{GVR: gvr("apps", "v1", "statefulsets"), Kind: "StatefulSet", Namespaced: true, Replicas: true},
	{GVR: gvr("apps", "v1", "daemonsets"), Kind: "DaemonSet", Namespaced: true},
	{GVR: gvr("batch", "v1", "jobs"), Kind: "Job", Namespaced: true},
}

// ownNamespace reports whether a namespace belongs to each cluster itself
// (default, kube-*, lotse-system): such a Namespace never propagates; the
// objects in it do, by policy, into the member's own namespace.
func ownNamespace(name string) bool {
	return name == "default" || name == "lotse-system" || strings.HasPrefix(name, "kube-")
}

// generated reports whether an object is made by every cluster's own
// controllers (the root CA ConfigMap, the default ServiceAccount, its
// token Secrets): the member makes its own, so the fleet's never go.
func generated(kind string, obj *unstructured.Unstructured) bool {
	switch kind {
	case "ConfigMap":
		return obj.GetName() == "kube-root-ca.crt"
	case "ServiceAccount":
		return obj.GetName() == "default"
	case "Secret":
		t, _, _ := unstructured.NestedString(obj.Object, "type")
		return t == "kubernetes.io/service-account-token"
	case "CustomResourceDefinition":
		// The fleet's own API (policies, bindings) is not an application's.
		group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
		return ownGroup(group)
	}
	return false
}
