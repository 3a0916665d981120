package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ProjectFinalizer keeps a Project until no cluster is left in its namespace.
const ProjectFinalizer = "lotse.dev/project"

// LabelProject marks the namespace of a project (its value is the
// project's name); Lotse's admission checks clusters in such namespaces
// against the project's quota.
const LabelProject = "lotse.dev/project"

// ProjectNamespacePrefix: a project NAME keeps its clusters in the
// namespace project-NAME.
const ProjectNamespacePrefix = "project-"

// Condition types of a Project.
const (
	// ConditionProjectReady: the project's namespace and its members'
	// role bindings are in place.
	ConditionProjectReady = "Ready"
	// ConditionQuotaExceeded: the project uses more than its quota allows
	// (the quota was lowered below what exists); nothing is taken away,
	// but nothing that would use more is admitted.
	ConditionQuotaExceeded = "QuotaExceeded"
)

// ProjectRole is what a member may do in a project.
// +kubebuilder:validation:Enum=owner;admin;viewer
type ProjectRole string

// Roles of project members.
const (
	// RoleOwner: everything an admin may, and manage the project's members.
	RoleOwner ProjectRole = "owner"
	// RoleAdmin: create, change and delete the project's clusters and
	// fleets, read their kubeconfigs.
	RoleAdmin ProjectRole = "admin"
	// RoleViewer: see the project's clusters, fleets and events; no
	// Secrets, no kubeconfigs, no changes.
	RoleViewer ProjectRole = "viewer"
)

// Project is a tenant's space on the management API: a namespace for its
// clusters, members with roles, and quotas. Members of one project can
// neither see nor touch another project's clusters, Secrets or
// kubeconfigs. The provider creates projects and sets their quotas;
// owners manage members.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=lotse
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 55",message="metadata.name: a project's name has at most 55 characters (its namespace is project-NAME)"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name: a project's name is lowercase letters, digits and '-', starting and ending with a letter or digit (its namespace is project-NAME)"
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.status.namespace`
// +kubebuilder:printcolumn:name="Clusters",type=integer,JSONPath=`.status.usage.clusters`
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.status.usage.nodes`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Project struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:default={}
	Spec   ProjectSpec   `json:"spec"`
	Status ProjectStatus `json:"status,omitempty"`
}

// ProjectSpec is who works in a project and how much it may use.
type ProjectSpec struct {
	// Description says what the project is for.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Description string `json:"description,omitempty"`
	// Members and their roles.
	// +kubebuilder:validation:MaxItems=100
	// +listType=map
	// +listMapKey=kind
	// +listMapKey=name
	// +optional
	Members []ProjectMember `json:"members,omitempty"`
	// Quota limits what the project's clusters may use; unset: no limit.
	// Only the provider changes it (update on projects/quota).
	// +optional
	Quota *ProjectQuota `json:"quota,omitempty"`
}

// ProjectMember is a user, group or service account with a role.
// +kubebuilder:validation:XValidation:rule="self.kind != 'ServiceAccount' || self.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",message="spec.members[].name: a ServiceAccount member is named NAMESPACE:NAME, e.g. ci:deployer"
// +kubebuilder:validation:XValidation:rule="!self.name.startsWith('system:')",message="spec.members[].name: names starting with system: belong to Kubernetes itself and cannot be project members"
type ProjectMember struct {
	// Kind of subject: User, Group or ServiceAccount.
	// +kubebuilder:default=User
	// +kubebuilder:validation:Enum=User;Group;ServiceAccount
	// +optional
	Kind string `json:"kind"`
	// Name of the user or group as the management API authenticates it;
	// for a ServiceAccount NAMESPACE:NAME.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Role of the member.
	Role ProjectRole `json:"role"`
}

// ProjectQuota limits a project; an unset field is no limit.
type ProjectQuota struct {
	// Clusters is how many clusters the project may have (a fleet's
	// control plane is a cluster too).
	// +kubebuilder:validation:Minimum=0
	// +optional
	Clusters *int32 `json:"clusters,omitempty"`
	// Nodes is how many worker machines the project's pools may reach
	// together: the sum of every pool's maximum.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Nodes *int32 `json:"nodes,omitempty"`
	// ControlPlaneReplicas is how many control-plane replicas the
	// project's clusters may run together: 1 per cluster, 3 per highly
	// available one (its etcd members).
	// +kubebuilder:validation:Minimum=0
	// +optional
	ControlPlaneReplicas *int32 `json:"controlPlaneReplicas,omitempty"`
}

// ProjectUsage is what a project's clusters use, counted as its quota counts.
type ProjectUsage struct {
	Clusters             int32 `json:"clusters"`
	Nodes                int32 `json:"nodes"`
	ControlPlaneReplicas int32 `json:"controlPlaneReplicas"`
}

// ProjectStatus is the observed state of a Project.
type ProjectStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Namespace holds the project's clusters (project-NAME).
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Usage is what the project's clusters use now.
	// +optional
	Usage ProjectUsage `json:"usage,omitempty"`
	// Conditions: Ready, QuotaExceeded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true

// ProjectList is a list of Projects.
type ProjectList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Project `json:"items"`
}
