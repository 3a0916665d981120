package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterFinalizer keeps a Cluster until its control plane and data are gone.
const ClusterFinalizer = "lotse.dev/cluster"

// PausedAnnotation set to "true" stops reconciliation of a Cluster (as
// Cluster API's paused annotation does): nothing is created, repaired or
// changed until it is removed. Deletion still works.
const PausedAnnotation = "lotse.dev/paused"

// OperationAnnotation asks Lotse for a one-off operation on a Cluster (as
// Gardener's gardener.cloud/operation does); Lotse removes it once the
// operation ran.
const OperationAnnotation = "lotse.dev/operation"

// OperationMaintain runs the cluster's maintenance now, outside its window.
const OperationMaintain = "maintain"

// Condition types of a Cluster, modelled on Gardener's care conditions.
const (
	// ConditionAPIServerAvailable: the API server answers /readyz through the cluster endpoint.
	ConditionAPIServerAvailable = "APIServerAvailable"
	// ConditionControlPlaneHealthy: every control-plane process runs and reports healthy.
	ConditionControlPlaneHealthy = "ControlPlaneHealthy"
	// ConditionEveryNodeReady: every machine of every pool is a Ready node.
	ConditionEveryNodeReady = "EveryNodeReady"
	// ConditionSystemComponentsHealthy: the managed addons (CoreDNS, ...) are available.
	ConditionSystemComponentsHealthy = "SystemComponentsHealthy"
	// ConditionReady: the cluster is fully reconciled and healthy.
	ConditionReady = "Ready"
	// ConditionSeedScheduled: the control plane has a seed (clusters
	// with spec.controlPlane.seedSelector only); False says why none
	// was chosen.
	ConditionSeedScheduled = "SeedScheduled"
	// ConditionRemediationAllowed is False while some pool has more
	// unhealthy machines than its healthCheck.maxUnhealthy: Lotse then
	// replaces none of them.
	ConditionRemediationAllowed = "RemediationAllowed"
	// ConditionEncryptionProviderCurrent: the key that encrypts has the
	// provider spec.encryption.provider names. A change of the provider
	// makes it False until the rotation that follows has rewritten the data.
	ConditionEncryptionProviderCurrent = "EncryptionProviderCurrent"
)

// ClusterPhase summarises where a Cluster is in its life.
// +kubebuilder:validation:Enum=Pending;Creating;Running;Updating;Unhealthy;Deleting;Failed;Hibernating;Hibernated;Waking;Restoring
type ClusterPhase string

// Phases of a Cluster.
const (
	PhasePending   ClusterPhase = "Pending"
	PhaseCreating  ClusterPhase = "Creating"
	PhaseRunning   ClusterPhase = "Running"
	PhaseUpdating  ClusterPhase = "Updating"
	PhaseUnhealthy ClusterPhase = "Unhealthy"
	PhaseDeleting  ClusterPhase = "Deleting"
	PhaseFailed    ClusterPhase = "Failed"
	// PhaseHibernating: draining and stopping on the way to sleep.
	PhaseHibernating ClusterPhase = "Hibernating"
	// PhaseHibernated: asleep; nothing of the cluster runs.
	PhaseHibernated ClusterPhase = "Hibernated"
	// PhaseWaking: starting again after hibernation.
	PhaseWaking ClusterPhase = "Waking"
)

// Cluster is a tenant Kubernetes cluster whose control plane Lotse hosts.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=lotse
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.spec.kubernetes.version`
// +kubebuilder:printcolumn:name="HA",type=boolean,JSONPath=`.spec.controlPlane.highAvailability`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.lastOperation.description`,priority=1
// +kubebuilder:printcolumn:name="Nodes",type=string,JSONPath=`.status.conditions[?(@.type=="EveryNodeReady")].status`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Cluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:default={}
	Spec   ClusterSpec   `json:"spec"`
	Status ClusterStatus `json:"status,omitempty"`
}

// ClusterPurpose says what a cluster is for.
type ClusterPurpose string

// Purposes of a Cluster.
const (
	PurposeWorkload ClusterPurpose = "workload"
	PurposeFleet    ClusterPurpose = "fleet"
)

// ClusterSpec is what the tenant asks for.
// +kubebuilder:validation:XValidation:rule="!has(self.backup) || !has(self.controlPlane.datastore) || self.controlPlane.datastore != 'shared'",message="spec.backup: a cluster on the shared datastore (spec.controlPlane.datastore: shared) cannot be backed up yet; use the dedicated datastore for clusters that need backups"
// +kubebuilder:validation:XValidation:rule="!has(self.purpose) || self.purpose != 'fleet' || !has(self.workers) || size(self.workers) == 0",message="spec.workers: a fleet control plane (spec.purpose: fleet) has no worker pools; the fleet's members run the workloads"
type ClusterSpec struct {
	// Kubernetes selects the version of the cluster.
	// +kubebuilder:default={}
	// +optional
	Kubernetes KubernetesSpec `json:"kubernetes,omitempty"`

	// ControlPlane shapes the hosted control plane.
	// +kubebuilder:default={}
	// +optional
	ControlPlane ControlPlaneSpec `json:"controlPlane"`

	// Encryption configures encryption at rest in the cluster's etcd.
	// +kubebuilder:default={}
	// +optional
	Encryption EncryptionSpec `json:"encryption"`

	// Networking holds the cluster's address ranges (immutable) and its
	// network policy defaults.
	// +kubebuilder:default={}
	// +optional
	Networking NetworkingSpec `json:"networking"`
	// Region of the cluster's machines (topology.kubernetes.io/region on
	// the nodes), unless a pool names its own.
	// +kubebuilder:default=local
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Region string `json:"region,omitempty"`

	// Maintenance says when Lotse may apply automatic updates.
	// +kubebuilder:default={}
	// +optional
	Maintenance MaintenanceSpec `json:"maintenance"`

	// Purpose is what the cluster is for: "workload" (default), or
	// "fleet": the control plane of a Fleet, where resources are templates
	// that Lotse propagates to the fleet's members. A fleet control plane
	// runs no workload controllers (a Deployment there makes no pods) and
	// has no worker pools. Fleets create such clusters; it is immutable.
	// +kubebuilder:default=workload
	// +kubebuilder:validation:Enum=workload;fleet
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.purpose is immutable; create a new cluster"
	// +optional
	Purpose ClusterPurpose `json:"purpose,omitempty"`

	// Workers are the cluster's worker pools.
	// +kubebuilder:validation:MaxItems=10
	// +listType=map
	// +listMapKey=name
	// +optional
	Workers []WorkerPool `json:"workers,omitempty"`

	// Hibernation puts the cluster to sleep and wakes it, by hand or on
	// schedules.
	// +optional
	Hibernation *HibernationSpec `json:"hibernation,omitempty"`

	// Backup takes etcd snapshots on a schedule and keeps the newest.
	// +optional
	Backup *BackupSpec `json:"backup,omitempty"`
}

// HibernationSpec: a hibernating cluster drains its workloads, stops its
// machines (their disks, and so node-local volumes, are kept) and its
// control plane (etcd's data is kept); waking starts everything again.
type HibernationSpec struct {
	// Enabled hibernates the cluster when true and wakes it when false.
	// Schedules set it at their start and end times.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// Schedules hibernate the cluster at each start time and wake it at
	// each end time.
	// +kubebuilder:validation:MaxItems=10
	// +optional
	Schedules []HibernationSchedule `json:"schedules,omitempty"`
}

// HibernationSchedule is a pair of times in cron syntax (minute hour
// day-of-month month day-of-week), e.g. start "0 20 * * 1-5" and end
// "0 7 * * 1-5": nights of working days.
// +kubebuilder:validation:XValidation:rule="has(self.start) || has(self.end)",message="a schedule needs start, end or both"
type HibernationSchedule struct {
	// Start is when the cluster goes to sleep.
	// +kubebuilder:validation:Pattern=`^\S+ \S+ \S+ \S+ \S+$`
	// +optional
	Start string `json:"start,omitempty"`
	// End is when the cluster wakes up.
	// +kubebuilder:validation:Pattern=`^\S+ \S+ \S+ \S+ \S+$`
	// +optional
	End string `json:"end,omitempty"`
	// Location is the time zone (IANA name, e.g. Europe/Zurich) of the
	// times; default UTC.
	// +optional
	Location string `json:"location,omitempty"`
}

// Hibernating says whether the spec asks the cluster to sleep.
func (c *Cluster) Hibernating() bool {
	return c.Spec.Hibernation != nil && c.Spec.Hibernation.Enabled != nil && *c.Spec.Hibernation.Enabled
}

// KubernetesSpec selects a Kubernetes version from the catalog.
type KubernetesSpec struct {
	// Version is a Kubernetes version from the catalog (`lotse release list`),
	// without a leading "v". Upgrades go one minor at a time; downgrades are
	// refused.
	// +kubebuilder:default="1.37.2"
	// The list below is the release catalog without expired versions (releases.Selectable);
	// a unit test keeps them equal. A cluster already on a version that expired keeps it
	// (validation ratcheting lets an unchanged value stay).
	// It is a rule rather than an enum so that the upgrade rules still run and explain themselves.
	// +kubebuilder:validation:XValidation:rule="self in ['1.37.2', '1.36.3', '1.35.4']",messageExpression="'spec.kubernetes.version: ' + self + ' is not in the catalog or has expired; supported versions: 1.37.2, 1.36.3, 1.35.4 (see `lotse release list`)'",reason=FieldValueInvalid
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[0-9]+[.][0-9]+[.][0-9]+$') || !oldSelf.matches('^[0-9]+[.][0-9]+[.][0-9]+$') || [int(self.split('.')[0]), int(self.split('.')[1])] == [int(oldSelf.split('.')[0]), int(oldSelf.split('.')[1])] ? int(self.split('.')[2]) >= int(oldSelf.split('.')[2]) : (int(self.split('.')[0]) > int(oldSelf.split('.')[0]) || (int(self.split('.')[0]) == int(oldSelf.split('.')[0]) && int(self.split('.')[1]) > int(oldSelf.split('.')[1])))",messageExpression="'spec.kubernetes.version: downgrade from ' + oldSelf + ' to ' + self + ' is not supported; choose ' + oldSelf + ' or a newer version'",reason=FieldValueForbidden
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[0-9]+[.][0-9]+[.][0-9]+$') || !oldSelf.matches('^[0-9]+[.][0-9]+[.][0-9]+$') || int(self.split('.')[0]) != int(oldSelf.split('.')[0]) || int(self.split('.')[1]) <= int(oldSelf.split('.')[1]) + 1",message="spec.kubernetes.version: an upgrade may not skip a minor version; upgrade to the next minor version first",reason=FieldValueForbidden
	// +optional
	Version string `json:"version,omitempty"`
}

// MaintenanceSpec says when and what Lotse updates on its own, as
// Gardener's shoot maintenance does.
type MaintenanceSpec struct {
	// TimeWindow is the daily window in which Lotse applies pending
	// automatic updates and moves the cluster off an expired version.
	// Unset: Lotse picks an hour when the cluster is created and writes it
	// here.
	// +optional
	TimeWindow *MaintenanceTimeWindow `json:"timeWindow,omitempty"`
	// AutoUpdate selects the automatic updates.
	// +kubebuilder:default={}
	// +optional
	AutoUpdate MaintenanceAutoUpdate `json:"autoUpdate"`
}

// MaintenanceTimeWindow is a daily window, each end written HHMMSS+ZZZZ
// (time of day and its offset from UTC), e.g. begin 220000+0100, end
// 230000+0100. It lasts 30 minutes to 6 hours and may cross midnight
// (begin 230000+0000, end 010000+0000).
// +kubebuilder:validation:XValidation:rule="!self.begin.matches('^([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9][+-]([01][0-9]|1[0-4])[0-5][0-9]$') || !self.end.matches('^([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9][+-]([01][0-9]|1[0-4])[0-5][0-9]$') || (((int(self.end.substring(0, 2)) * 3600 + int(self.end.substring(2, 4)) * 60 + int(self.end.substring(4, 6)) - (self.end.substring(6, 7) == '-' ? -1 : 1) * (int(self.end.substring(7, 9)) * 3600 + int(self.end.substring(9, 11)) * 60)) - (int(self.begin.substring(0, 2)) * 3600 + int(self.begin.substring(2, 4)) * 60 + int(self.begin.substring(4, 6)) - (self.begin.substring(6, 7) == '-' ? -1 : 1) * (int(self.begin.substring(7, 9)) * 3600 + int(self.begin.substring(9, 11)) * 60))) % 86400 + 86400) % 86400 >= 1800 && (((int(self.end.substring(0, 2)) * 3600 + int(self.end.substring(2, 4)) * 60 + int(self.end.substring(4, 6)) - (self.end.substring(6, 7) == '-' ? -1 : 1) * (int(self.end.substring(7, 9)) * 3600 + int(self.end.substring(9, 11)) * 60)) - (int(self.begin.substring(0, 2)) * 3600 + int(self.begin.substring(2, 4)) * 60 + int(self.begin.substring(4, 6)) - (self.begin.substring(6, 7) == '-' ? -1 : 1) * (int(self.begin.substring(7, 9)) * 3600 + int(self.begin.substring(9, 11)) * 60))) % 86400 + 86400) % 86400 <= 21600",messageExpression="'spec.maintenance.timeWindow: from ' + self.begin + ' to ' + self.end + ' is not a window of 30 minutes to 6 hours; end must come after begin (a window may cross midnight), e.g. begin 220000+0100, end 230000+0100'",reason=FieldValueInvalid
type MaintenanceTimeWindow struct {
	// Begin of the window, HHMMSS+ZZZZ.
	// +kubebuilder:validation:MaxLength=11
	// +kubebuilder:validation:XValidation:rule="self.matches('^([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9][+-]([01][0-9]|1[0-4])[0-5][0-9]$')",messageExpression="'spec.maintenance.timeWindow.begin: ' + self + ' is not a time of day with its UTC offset; write it HHMMSS+ZZZZ, like 220000+0100'"
	Begin string `json:"begin"`
	// End of the window, HHMMSS+ZZZZ.
	// +kubebuilder:validation:MaxLength=11
	// +kubebuilder:validation:XValidation:rule="self.matches('^([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9][+-]([01][0-9]|1[0-4])[0-5][0-9]$')",messageExpression="'spec.maintenance.timeWindow.end: ' + self + ' is not a time of day with its UTC offset; write it HHMMSS+ZZZZ, like 230000+0100'"
	End string `json:"end"`
}

// MaintenanceAutoUpdate selects the updates Lotse applies in the window.
type MaintenanceAutoUpdate struct {
	// KubernetesVersion moves the cluster to the newest patch of its
	// minor in the window (default true). An expired version is replaced
	// by the next supported one in the window whatever this says.
	// +kubebuilder:default=true
	// +optional
	KubernetesVersion *bool `json:"kubernetesVersion,omitempty"`
}

// ControlPlaneSpec shapes the hosted control plane.
// +kubebuilder:validation:XValidation:rule="!has(self.seedSelector) || !has(self.datastore) || self.datastore == 'dedicated'",message="spec.controlPlane.datastore: the shared datastore is not offered on seeds; leave it dedicated or drop seedSelector"
// +kubebuilder:validation:XValidation:rule="has(self.seedSelector) == has(oldSelf.seedSelector)",message="spec.controlPlane.seedSelector cannot be added or removed: where a control plane runs is chosen at creation; create a new cluster (and restore a backup into it) to move one"
type ControlPlaneSpec struct {
	// HighAvailability runs 3 etcd members and 2 API servers behind one
	// endpoint, and 2 leader-elected controller-managers and schedulers.
	// A single-replica control plane may become highly available (its etcd
	// grows to 3 members, keeping its data; the endpoint stays); the way
	// back is refused.
	// +kubebuilder:default=false
	// +kubebuilder:validation:XValidation:rule="self || !oldSelf",message="spec.controlPlane.highAvailability cannot go back to false: a highly available control plane does not shrink to one replica; create a new cluster (and restore a backup into it) for that"
	// +optional
	HighAvailability bool `json:"highAvailability,omitempty"`

	// Datastore is where the cluster's data lives: "dedicated" (etcd
	// members of its own) or "shared" (one etcd run by Lotse for many
	// clusters, each under a key prefix of its own that only the
	// cluster's own etcd user may read or write). Shared saves an etcd
	// process per cluster; clusters on it cannot be backed up yet. Chosen
	// at creation.
	// +kubebuilder:default=dedicated
	// +kubebuilder:validation:Enum=dedicated;shared
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.controlPlane.datastore cannot change in place; create a new cluster with the datastore you want and move the workloads (restoring a backup across datastores is not supported yet)"
	// +optional
	Datastore string `json:"datastore,omitempty"`

	// SeedSelector runs the control plane as pods on a seed cluster (a
	// Seed whose labels match; {} matches every seed) instead of as
	// processes beside the manager. Of the matching seeds that are Ready
	// and have room, one in the cluster's region is preferred, then the
	// least loaded; status.seed names the one chosen. Chosen at creation.
	// The shared datastore is not offered on seeds.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.controlPlane.seedSelector is immutable: the seed is chosen at creation"
	// +optional
	SeedSelector *metav1.LabelSelector `json:"seedSelector,omitempty"`
}

// Datastores of a control plane.
const (
	DatastoreDedicated = "dedicated"
	DatastoreShared    = "shared"
)

// EncryptionSpec configures encryption at rest. Secrets are always encrypted.
type EncryptionSpec struct {
	// Provider is the encryption provider: aescbc (default), aesgcm or
	// secretbox. Changing it starts an etcd-encryption-key rotation: a key
	// of the new provider encrypts and every encrypted object is rewritten
	// (condition EncryptionProviderCurrent); completing the rotation
	// removes the old key.
	// +kubebuilder:default=aescbc
	// +kubebuilder:validation:Enum=aescbc;aesgcm;secretbox
	// +optional
	Provider string `json:"provider,omitempty"`

	// Resources are encrypted in addition to secrets, e.g. "configmaps" or
	// "widgets.example.com".
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +optional
	Resources []EncryptedResource `json:"resources,omitempty"`
}

// EncryptedResource names a resource as in an EncryptionConfiguration:
// "configmaps", or "RESOURCE.GROUP" for other groups.
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
type EncryptedResource string

// NetworkingSpec holds the cluster's address ranges and network policy defaults.
// +kubebuilder:validation:XValidation:rule="has(self.pods) == has(oldSelf.pods) && (!has(self.pods) || self.pods == oldSelf.pods) && has(self.services) == has(oldSelf.services) && (!has(self.services) || self.services == oldSelf.services) && has(self.nodes) == has(oldSelf.nodes) && (!has(self.nodes) || self.nodes == oldSelf.nodes) && has(self.egress) == has(oldSelf.egress) && (!has(self.egress) || self.egress == oldSelf.egress)",message="spec.networking.pods, services, nodes and egress are immutable; create a new cluster to change them"
// +kubebuilder:validation:XValidation:rule="!has(self.pods) || !has(self.services) || !isCIDR(self.pods) || !isCIDR(self.services) || !(cidr(self.pods).containsCIDR(cidr(self.services)) || cidr(self.services).containsCIDR(cidr(self.pods)))",messageExpression="'spec.networking.pods (' + self.pods + ') and spec.networking.services (' + self.services + ') overlap; choose disjoint ranges'"
type NetworkingSpec struct {
	// Pods is the CIDR pod addresses come from; each node gets a /24 of it.
	// +kubebuilder:default="10.244.0.0/16"
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self).ip().family() == 4",messageExpression="'spec.networking.pods: ' + self + ' is not an IPv4 CIDR; write it like 10.244.0.0/16'"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self) == cidr(self).masked()",message="spec.networking.pods has host bits set; write the network address, e.g. 10.244.0.0/16 instead of 10.244.1.0/16"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).prefixLength() <= 22",message="spec.networking.pods must be /22 or larger so that nodes can get /24 ranges"
	// +optional
	Pods string `json:"pods,omitempty"`

	// Services is the CIDR ClusterIPs come from.
	// +kubebuilder:default="10.96.0.0/16"
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self).ip().family() == 4",messageExpression="'spec.networking.services: ' + self + ' is not an IPv4 CIDR; write it like 10.96.0.0/16'"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self) == cidr(self).masked()",message="spec.networking.services has host bits set; write the network address, e.g. 10.96.0.0/16 instead of 10.96.1.0/16"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || (cidr(self).prefixLength() >= 12 && cidr(self).prefixLength() <= 28)",message="spec.networking.services must be between /12 and /28"
	// +optional
	Services string `json:"services,omitempty"`

	// Nodes is the CIDR machines get their addresses from. Empty: Lotse
	// picks a free /24 on its host (see status.nodesCIDR).
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self).ip().family() == 4 && cidr(self).prefixLength() >= 16 && cidr(self).prefixLength() <= 28",message="spec.networking.nodes must be an IPv4 CIDR between /16 and /28, e.g. 10.250.7.0/24"
	// +optional
	Nodes string `json:"nodes,omitempty"`

	// Egress says whether machines and pods may send traffic outside the
	// cluster. Deny (the default): they reach only the cluster's own
	// ranges, its API and tunnel endpoints; anything else (an image pull
	// from a public registry, say) fails at once, and no packet leaves the
	// host. Allow: for providers whose machines have real uplinks.
	// +kubebuilder:validation:Enum=Deny;Allow
	// +kubebuilder:default=Deny
	// +optional
	Egress EgressPolicy `json:"egress,omitempty"`

	// Plugin is the pod network (CNI) of the nodes. bridge (the default):
	// Lotse's routed bridge, which runs everywhere, with kube-router
	// enforcing NetworkPolicies. cilium and calico: the upstream projects
	// at pinned versions, rendered and kept by Lotse, for providers whose
	// nodes can pull their images (the local machines of a host without
	// registry access cannot). Fixed at creation.
	// +kubebuilder:validation:Enum=bridge;cilium;calico
	// +kubebuilder:default=bridge
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",messageExpression="'spec.networking.plugin cannot change on an existing cluster (' + oldSelf + ' to ' + self + '): every pod would lose its network; create a new cluster with plugin ' + self + ' and move the workloads to it'",reason=FieldValueForbidden
	// +optional
	Plugin NetworkPlugin `json:"plugin,omitempty"`

	// DefaultDenyTenantNamespaces puts a deny-all NetworkPolicy (DNS still
	// allowed) into every namespace outside kube-system, kube-public and
	// kube-node-lease, now and when one is created: tenants then open
	// traffic with policies of their own. kube-system is always protected
	// this way. May be changed at any time.
	// +optional
	DefaultDenyTenantNamespaces bool `json:"defaultDenyTenantNamespaces,omitempty"`
}

// NetworkPlugin is a cluster's pod network implementation.
type NetworkPlugin string

// Network plugins.
const (
	NetworkPluginBridge NetworkPlugin = "bridge"
	NetworkPluginCilium NetworkPlugin = "cilium"
	NetworkPluginCalico NetworkPlugin = "calico"
)

// EgressPolicy says whether a cluster's traffic may leave it.
type EgressPolicy string

// Egress policies.
const (
	EgressDeny  EgressPolicy = "Deny"
	EgressAllow EgressPolicy = "Allow"
)

// ClusterStatus is what Lotse observed and did.
type ClusterStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Phase summarises the cluster's state.
	// +optional
	Phase ClusterPhase `json:"phase,omitempty"`
	// Conditions: APIServerAvailable, ControlPlaneHealthy, Ready.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// LastOperation is the current or last reconciliation and its tasks.
	// +optional
	LastOperation *LastOperation `json:"lastOperation,omitempty"`
	// Endpoint is the URL of the cluster's API server.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`
	// KubernetesVersion is the version the control plane runs.
	// +optional
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// KubeconfigSecret names the Secret holding the admin kubeconfig (key "kubeconfig").
	// +optional
	KubeconfigSecret string `json:"kubeconfigSecret,omitempty"`
	// NodesCIDR is the network the cluster's machines live in.
	// +optional
	NodesCIDR string `json:"nodesCIDR,omitempty"`
	// Seed is the Seed the control plane runs on (empty: processes
	// beside the manager).
	// +optional
	Seed string `json:"seed,omitempty"`
	// Workers reports each worker pool.
	// +listType=map
	// +listMapKey=name
	// +optional
	Workers []WorkerPoolStatus `json:"workers,omitempty"`
	// Addons reports each component Lotse manages inside the cluster.
	// +listType=map
	// +listMapKey=name
	// +optional
	Addons []AddonStatus `json:"addons,omitempty"`
	// Maintenance shows the next maintenance window, what it will do and
	// what the last one did.
	// +optional
	Maintenance *MaintenanceStatus `json:"maintenance,omitempty"`
	// Upgrade is the progress of a version change while one runs:
	// kubernetesVersion stays at the old version until every component
	// and node runs the new one.
	// +optional
	Upgrade *UpgradeStatus `json:"upgrade,omitempty"`
	// Hibernation is where the cluster is on its way to sleep or back.
	// +optional
	Hibernation *HibernationStatus `json:"hibernation,omitempty"`
	// Backup reports the cluster's snapshots.
	// +optional
	Backup *BackupStatus `json:"backup,omitempty"`
	// Restore reports the latest restore from a snapshot.
	// +optional
	Restore *RestoreStatus `json:"restore,omitempty"`
	// Credentials reports credential rotations.
	// +optional
	Credentials *CredentialsStatus `json:"credentials,omitempty"`
}

// HibernationStatus reports hibernation.
type HibernationStatus struct {
	// Hibernated is true once nothing of the cluster runs: machines and
	// control plane stopped.
	Hibernated bool `json:"hibernated"`
	// Since is when the cluster started going to sleep.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// Step is what hibernation or waking does now.
	// +optional
	Step string `json:"step,omitempty"`
	// NextStart and NextEnd are the schedules' next times.
	// +optional
	NextStart *metav1.Time `json:"nextStart,omitempty"`
	// +optional
	NextEnd *metav1.Time `json:"nextEnd,omitempty"`
}

// MaintenanceStatus is the cluster's maintenance schedule and history.
type MaintenanceStatus struct {
	// NextWindowBegin and NextWindowEnd bound the next (or current) window.
	NextWindowBegin metav1.Time `json:"nextWindowBegin"`
	NextWindowEnd   metav1.Time `json:"nextWindowEnd"`
	// Pending lists what the next window will do, e.g. "kubernetes 1.36.1
	// -> 1.36.3 (autoUpdate.kubernetesVersion)".
	// +optional
	Pending []string `json:"pending,omitempty"`
	// LastRunTime is when maintenance last ran (in a window, or asked for
	// with the annotation lotse.dev/operation: maintain); LastRunActions
	// what it did.
	// +optional
	LastRunTime *metav1.Time `json:"lastRunTime,omitempty"`
	// +optional
	LastRunActions []string `json:"lastRunActions,omitempty"`
}

// UpgradeStatus is the progress of a version change.
type UpgradeStatus struct {
	// FromVersion is the version the cluster ran when the upgrade began.
	FromVersion string `json:"fromVersion"`
	// ToVersion is spec.kubernetes.version.
	ToVersion string `json:"toVersion"`
	// Components, in the order they are updated (etcd, kube-apiserver,
	// kube-controller-manager, kube-scheduler, then each worker pool as
	// "pool/NAME"): how many of their instances run the new version.
	// +listType=map
	// +listMapKey=name
	// +optional
	Components []ComponentUpgradeStatus `json:"components,omitempty"`
}

// ComponentUpgradeStatus is how far one component is updated.
type ComponentUpgradeStatus struct {
	Name    string `json:"name"`
	Updated int32  `json:"updated"`
	Total   int32  `json:"total"`
}

// AddonStatus reports one managed component inside the tenant cluster.
type AddonStatus struct {
	// Name of the addon, e.g. "coredns".
	Name string `json:"name"`
	// Healthy: every object exists as declared and its workloads are
	// rolled out and available.
	Healthy bool `json:"healthy"`
	// Message says what is (not) available.
	// +optional
	Message string `json:"message,omitempty"`
	// Ignored lists the addon's objects annotated lotse.dev/ignore=true in
	// the cluster, which Lotse leaves alone and does not repair.
	// +optional
	Ignored []string `json:"ignored,omitempty"`
}

// Operation types.
const (
	OperationCreate    = "Create"
	OperationReconcile = "Reconcile"
	OperationDelete    = "Delete"
)

// Operation and task states.
const (
	StatePending    = "Pending"
	StateProcessing = "Processing"
	StateSucceeded  = "Succeeded"
	StateError      = "Error"
)

// LastOperation describes a reconciliation as a graph of named tasks.
type LastOperation struct {
	// Type is Create, Reconcile or Delete.
	Type string `json:"type"`
	// State is Processing, Succeeded or Error.
	State string `json:"state"`
	// Progress in percent of tasks done.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Progress int32 `json:"progress"`
	// Description says what is happening now.
	Description string `json:"description"`
	// LastUpdateTime is when this was last written.
	LastUpdateTime metav1.Time `json:"lastUpdateTime"`
	// Tasks of the operation with their states.
	// +listType=map
	// +listMapKey=name
	// +optional
	Tasks []TaskStatus `json:"tasks,omitempty"`
}

// TaskStatus is one task of an operation.
type TaskStatus struct {
	// Name of the task, e.g. "etcd" or "kube-apiserver".
	Name string `json:"name"`
	// State is Pending, Processing, Succeeded or Error.
	State string `json:"state"`
	// Message says why the task is not done, if it is not.
	// +optional
	Message string `json:"message,omitempty"`
}

// ClusterList is a list of Clusters.
// +kubebuilder:object:root=true
type ClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Cluster `json:"items"`
}
