package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FleetFinalizer keeps a Fleet until what it propagated is accounted for
// and its control plane is gone.
const FleetFinalizer = "lotse.dev/fleet"

// LabelFleet marks the objects of a fleet: its control-plane Cluster, its
// members, and every object it propagated into a member.
const LabelFleet = "lotse.dev/fleet"

// Condition types of Fleets and FleetMembers.
const (
	// ConditionControlPlaneReady: the fleet's control plane answers and
	// carries the policy APIs.
	ConditionControlPlaneReady = "ControlPlaneReady"
	// ConditionMemberReady: the member's API server answers /readyz with
	// the member's credentials (FleetMember).
	ConditionMemberReady = "Ready"
)

// FleetPhase summarises a Fleet.
// +kubebuilder:validation:Enum=Pending;Ready;Deleting
type FleetPhase string

// Phases of a Fleet.
const (
	FleetPending  FleetPhase = "Pending"
	FleetReady    FleetPhase = "Ready"
	FleetDeleting FleetPhase = "Deleting"
)

// Fleet is a set of clusters that federation places workloads on. Its
// control plane is a hosted, workerless Kubernetes API (a Cluster with
// spec.purpose fleet): users apply ordinary resources there, together
// with PropagationPolicies and OverridePolicies (policy.lotse.dev), and
// Lotse places them on the fleet's members (FleetMember objects).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=lotse
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 57",message="metadata.name: a fleet's name has at most 57 characters (its API is the Cluster NAME-fleet, and the name labels every copy it makes)"
// +kubebuilder:printcolumn:name="Members",type=integer,JSONPath=`.status.members`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyMembers`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Fleet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:default={}
	Spec   FleetSpec   `json:"spec"`
	Status FleetStatus `json:"status,omitempty"`
}

// FleetSpec shapes the fleet's control plane.
type FleetSpec struct {
	// Kubernetes selects the version of the fleet's control plane.
	// +kubebuilder:default={}
	// +optional
	Kubernetes KubernetesSpec `json:"kubernetes,omitempty"`
	// ControlPlane shapes the fleet's hosted control plane.
	// +kubebuilder:default={}
	// +optional
	ControlPlane ControlPlaneSpec `json:"controlPlane"`
	// DNS is the fleet's zone on the manager's DNS server.
	// +kubebuilder:default={}
	// +optional
	DNS FleetDNS `json:"dns"`
}

// FleetDNS is the fleet's DNS zone: SVC.NS.svc.ZONE answers with the
// addresses of every ready member that serves the Service NS/SVC, and
// SVC.NS.svc.REGION.ZONE with those of the region's members.
type FleetDNS struct {
	// Zone, e.g. "shop.example.com"; empty: NAME.NAMESPACE.fleet.lotse.
	// Delegate it to the manager's DNS server from the provider's DNS
	// (docs/federation.md).
	// +kubebuilder:validation:MaxLength=200
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?\.?$`
	// +optional
	Zone string `json:"zone,omitempty"`
	// TTL of the answers in seconds: how long after a member's health
	// changes resolvers may still hand out the old answer.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +optional
	TTL int32 `json:"ttl,omitempty"`
}

// FleetStatus reports the fleet.
type FleetStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Phase summarises the fleet.
	// +optional
	Phase FleetPhase `json:"phase,omitempty"`
	// Conditions: ControlPlaneReady.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ControlPlane names the Cluster that hosts the fleet's API.
	// +optional
	ControlPlane string `json:"controlPlane,omitempty"`
	// Endpoint is the URL of the fleet's API server.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`
	// KubeconfigSecret names the Secret with the fleet's admin kubeconfig
	// (key "kubeconfig").
	// +optional
	KubeconfigSecret string `json:"kubeconfigSecret,omitempty"`
	// DNS says where the fleet's zone is served.
	// +optional
	DNS *FleetDNSStatus `json:"dns,omitempty"`
	// Members counts the fleet's members; ReadyMembers those that are Ready.
	// +optional
	Members int32 `json:"members"`
	// +optional
	ReadyMembers int32 `json:"readyMembers"`
}

// FleetDNSStatus is where the fleet's zone is served.
type FleetDNSStatus struct {
	// Zone is the fleet's zone, fully qualified.
	Zone string `json:"zone"`
	// Server is the manager's DNS server (UDP and TCP).
	// +optional
	Server string `json:"server,omitempty"`
}

// +kubebuilder:object:root=true

// FleetList is a list of Fleets.
type FleetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Fleet `json:"items"`
}

// FleetEndpointAnnotation on a pull-mode FleetMember is where its agent
// reaches the fleet's API when that is not the fleet's own endpoint, as
// `lotse fleet register --fleet-endpoint` was told: registering the
// member again keeps it.
const FleetEndpointAnnotation = "lotse.dev/fleet-endpoint"

// FleetMember makes a cluster a member of a fleet. Its name is the
// member's name in the fleet's policies (placement.clusterAffinity.
// clusterNames); its labels are what their label selectors match.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=lotse
// +kubebuilder:printcolumn:name="Fleet",type=string,JSONPath=`.spec.fleet`
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.syncMode`,priority=1
// +kubebuilder:printcolumn:name="Region",type=string,JSONPath=`.status.region`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.kubernetesVersion`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type FleetMember struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   FleetMemberSpec   `json:"spec"`
	Status FleetMemberStatus `json:"status,omitempty"`
}

// FleetMemberSpec names the fleet and the cluster that joins it.
// +kubebuilder:validation:XValidation:rule="(has(self.syncMode) && self.syncMode == 'Pull') || has(self.cluster) != has(self.kubeconfigSecretRef)",message="set exactly one of spec.cluster (a Lotse cluster in this namespace) and spec.kubeconfigSecretRef (any other cluster), or spec.syncMode: Pull (lotse fleet register)"
// +kubebuilder:validation:XValidation:rule="!(has(self.syncMode) && self.syncMode == 'Pull') || (!has(self.cluster) && !has(self.kubeconfigSecretRef))",message="a member with spec.syncMode: Pull is reached by no one: its agent reaches the fleet; remove spec.cluster and spec.kubeconfigSecretRef"
// +kubebuilder:validation:XValidation:rule="(has(self.syncMode) ? self.syncMode : 'Push') == (has(oldSelf.syncMode) ? oldSelf.syncMode : 'Push')",message="spec.syncMode is immutable; unjoin and join again"
// +kubebuilder:validation:XValidation:rule="(has(self.cluster) ? self.cluster : '-') == (has(oldSelf.cluster) ? oldSelf.cluster : '-') && (has(self.kubeconfigSecretRef) ? self.kubeconfigSecretRef.name : '-') == (has(oldSelf.kubeconfigSecretRef) ? oldSelf.kubeconfigSecretRef.name : '-')",message="spec.cluster and spec.kubeconfigSecretRef are immutable: a member is one cluster; unjoin and join the other cluster"
type FleetMemberSpec struct {
	// Fleet is the fleet (in this namespace) the cluster joins.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.fleet is immutable; unjoin and join the other fleet"
	Fleet string `json:"fleet"`
	// Cluster is a Lotse cluster in this namespace; Lotse handles its
	// credentials.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Cluster string `json:"cluster,omitempty"`
	// KubeconfigSecretRef names a Secret in this namespace whose key
	// "kubeconfig" reaches any other cluster (push mode).
	// +optional
	KubeconfigSecretRef *SecretReference `json:"kubeconfigSecretRef,omitempty"`
	// SyncMode: Push (default: Lotse applies the fleet's copies in the
	// member through spec.cluster or spec.kubeconfigSecretRef) or Pull
	// (an agent in the member, which joined with a bootstrap token, applies
	// Works it reads from the fleet: for members the fleet cannot reach).
	// +kubebuilder:validation:Enum=Push;Pull
	// +optional
	SyncMode SyncMode `json:"syncMode,omitempty"`
	// Region, Zone and Provider override what Lotse reads from the member
	// (the Lotse cluster's spec.region, or its nodes'
	// topology.kubernetes.io labels).
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Region string `json:"region,omitempty"`
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Zone string `json:"zone,omitempty"`
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Provider string `json:"provider,omitempty"`
}

// SyncMode is how a member gets the fleet's copies.
type SyncMode string

// Sync modes, as Karmada's.
const (
	SyncPush SyncMode = "Push"
	SyncPull SyncMode = "Pull"
)

// FleetMemberStatus reports a member as the fleet sees it.
type FleetMemberStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready (the member answers /readyz).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Region, Zone and Provider of the member, as placement sees them.
	// +optional
	Region string `json:"region,omitempty"`
	// +optional
	Zone string `json:"zone,omitempty"`
	// +optional
	Provider string `json:"provider,omitempty"`
	// KubernetesVersion is what the member's API server reports.
	// +optional
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// LastProbeTime is when the member was last probed.
	// +optional
	LastProbeTime *metav1.Time `json:"lastProbeTime,omitempty"`
	// ResourceSummary is the member's room, which replica division by
	// available capacity (dynamicWeight: AvailableReplicas) and spread
	// constraints rank members by.
	// +optional
	ResourceSummary *ResourceSummary `json:"resourceSummary,omitempty"`
}

// ResourceSummary sums a member's Ready, schedulable nodes.
type ResourceSummary struct {
	// Allocatable is the sum of the nodes' allocatable resources.
	// +optional
	Allocatable corev1.ResourceList `json:"allocatable,omitempty"`
	// Allocated is the sum of the requests of the pods on those nodes
	// that have not finished; "pods" counts the pods.
	// +optional
	Allocated corev1.ResourceList `json:"allocated,omitempty"`
}

// +kubebuilder:object:root=true

// FleetMemberList is a list of FleetMembers.
type FleetMemberList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FleetMember `json:"items"`
}
