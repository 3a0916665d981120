package propagation

import (
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
}

// APIVersion is the kind's apiVersion string.
func (k Kind) APIVersion() string { return k.GVR.GroupVersion().String() }

func gvr(group, version, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
}

// Kinds are the kinds a fleet propagates: the ordinary ones of an
// application. Namespaces go to every member unless a policy or the label
// lotse.dev/propagate: "false" says otherwise.
var Kinds = []Kind{
	{GVR: gvr("", "v1", "namespaces"), Kind: "Namespace"},
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

// systemNamespaces never propagate: every member has its own.
var systemNamespaces = map[string]bool{
	"kube-system": true, "kube-public": true, "kube-node-lease": true, "lotse-system": true,
}
