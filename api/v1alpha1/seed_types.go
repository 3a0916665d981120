package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SeedFinalizer keeps a Seed while it hosts control planes.
const SeedFinalizer = "lotse.dev/seed"

// Condition types of a Seed.
const (
	// ConditionSeedReady: the seed's API answers with its kubeconfig and
	// at least one of its nodes is Ready.
	ConditionSeedReady = "Ready"
	// ConditionSeedDeletionBlocked: the seed was deleted but still hosts
	// control planes; it goes once they are gone.
	ConditionSeedDeletionBlocked = "DeletionBlocked"
)

// Seed is a Kubernetes cluster that hosts the control planes of other
// clusters as pods: a namespace per control plane with etcd as a
// StatefulSet, the API server as a Deployment behind a Service, and the
// controller-manager and scheduler as Deployments. A Cluster asks for a
// seed with spec.controlPlane.seedSelector; without it the control plane
// runs as processes beside the manager.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=lotse
// +kubebuilder:printcolumn:name="Region",type=string,JSONPath=`.spec.region`
// +kubebuilder:printcolumn:name="ControlPlanes",type=integer,JSONPath=`.status.controlPlanes`
// +kubebuilder:printcolumn:name="Capacity",type=integer,JSONPath=`.spec.capacity.controlPlanes`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Seed struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec SeedSpec `json:"spec"`
	// +optional
	Status SeedStatus `json:"status,omitempty"`
}

// SeedSpec says how to reach a seed and how much it may host.
// +kubebuilder:validation:XValidation:rule="has(self.kubeconfigSecretRef) != (has(self.managementCluster) && self.managementCluster)",message="give exactly one of spec.kubeconfigSecretRef (a seed reached with a kubeconfig) and spec.managementCluster: true (the cluster of the management API)"
type SeedSpec struct {
	// KubeconfigSecretRef names a Secret (key "kubeconfig") with a
	// kubeconfig of the seed with inline credentials, allowed to manage
	// namespaces and the workloads in them. A Lotse cluster's own
	// kubeconfig Secret (NAME-kubeconfig) makes that cluster a seed.
	// +optional
	KubeconfigSecretRef *NamespacedSecretReference `json:"kubeconfigSecretRef,omitempty"`
	// ManagementCluster makes the cluster of the management API the
	// seed, reached with the manager's own identity (the Helm chart's
	// service account and its seed role): no kubeconfig is kept.
	// +optional
	ManagementCluster bool `json:"managementCluster,omitempty"`
	// Region of the seed; a cluster's control plane goes to a seed of
	// the cluster's region when one matches and has room.
	// +kubebuilder:default=local
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Region string `json:"region,omitempty"`
	// Capacity limits what the seed hosts.
	// +kubebuilder:default={}
	// +optional
	Capacity SeedCapacity `json:"capacity,omitempty"`
	// APIServerService says how the seed exposes the API servers of the
	// control planes it hosts. A change reaches control planes whose
	// certificates are not made yet (one waiting for an address);
	// running ones keep what their certificates name.
	// +kubebuilder:default={}
	// +optional
	APIServerService SeedAPIServerService `json:"apiServerService,omitempty"`
}

// SeedAPIServerService is the Service in front of a hosted control
// plane's API servers.
type SeedAPIServerService struct {
	// Type LoadBalancer (default) gives each control plane an address
	// of the seed's load balancers, which becomes the cluster's endpoint
	// (status.endpoint, kubeconfigs); NodePort is for seeds without load
	// balancers: clients then reach the API through the manager's host.
	// +kubebuilder:default=LoadBalancer
	// +kubebuilder:validation:Enum=LoadBalancer;NodePort
	// +optional
	Type string `json:"type,omitempty"`
	// Annotations go on each Service: the seed's load balancer settings,
	// such as lb.lotse.dev/internal: "true" for an address inside the
	// seed's node network.
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// API server Service types of a seed.
const (
	SeedServiceLoadBalancer = "LoadBalancer"
	SeedServiceNodePort     = "NodePort"
)

// SeedCapacity is how much a seed may host.
type SeedCapacity struct {
	// ControlPlanes is the most control planes the seed hosts; a cluster
	// is not placed on a full seed.
	// +kubebuilder:default=20
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +optional
	ControlPlanes *int32 `json:"controlPlanes,omitempty"`
}

// DefaultSeedCapacity is spec.capacity.controlPlanes when it is not set.
const DefaultSeedCapacity = 20

// ControlPlaneCapacity is the most control planes the seed hosts.
func (s *Seed) ControlPlaneCapacity() int32 {
	if s.Spec.Capacity.ControlPlanes == nil {
		return DefaultSeedCapacity
	}
	return *s.Spec.Capacity.ControlPlanes
}

// NamespacedSecretReference names a Secret in a namespace.
type NamespacedSecretReference struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// SeedStatus is the observed state of a seed.
type SeedStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, DeletionBlocked.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ControlPlanes is how many clusters' control planes the seed hosts.
	// +optional
	ControlPlanes int32 `json:"controlPlanes,omitempty"`
	// ReadyNodes is how many of the seed's nodes are Ready.
	// +optional
	ReadyNodes int32 `json:"readyNodes,omitempty"`
	// KubernetesVersion is the version the seed's API server reports.
	// +optional
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
}

// +kubebuilder:object:root=true

// SeedList is a list of Seeds.
type SeedList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Seed `json:"items"`
}
