package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels Lotse puts on Machines (and on the Nodes they become).
const (
	LabelCluster = "lotse.dev/cluster"
	LabelPool    = "lotse.dev/pool"
	LabelMachine = "lotse.dev/machine"
)

// BootstrapGroup is the group, in a tenant cluster, that the bootstrap
// tokens of joining machines authenticate as.
const BootstrapGroup = "system:bootstrappers:lotse:worker"

// MachineFinalizer keeps a Machine until its node is drained and its
// resources are gone.
const MachineFinalizer = "lotse.dev/machine"

// Machine classes.
const (
	// MachineClassLocal: a network namespace on this host with its own
	// containerd, kubelet and kube-proxy.
	MachineClassLocal = "local"
)

// WorkerPool is a group of machines of one class.
// +kubebuilder:validation:XValidation:rule="self.minimum <= self.maximum",message="spec.workers[]: minimum must not exceed maximum"
// +kubebuilder:validation:XValidation:rule="self.maxSurge > 0 || self.maxUnavailable > 0",message="spec.workers[].maxSurge and maxUnavailable must not both be 0, or a rolling update could never progress"
type WorkerPool struct {
	// Name of the pool: lowercase letters, digits and '-'.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=20
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Minimum number of machines. With maximum above it, the pool
	// autoscales between the two; otherwise it has this many.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Minimum int32 `json:"minimum"`
	// Maximum number of machines.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Maximum int32 `json:"maximum"`
	// MaxSurge is how many machines a rolling update may add above the desired count.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxSurge int32 `json:"maxSurge"`
	// MaxUnavailable is how many machines a rolling update may take away.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxUnavailable int32 `json:"maxUnavailable"`
	// UpdateStrategy says how machines move to a new Kubernetes version
	// (after the control plane): RollingReplace creates a machine at the
	// new version, waits until it is a Ready node, then drains and deletes
	// an old one, at the pace maxSurge and maxUnavailable allow. InPlace
	// drains a machine, swaps its kubelet and kube-proxy for the new
	// version's and uncordons it, max(1, maxUnavailable) machines at a
	// time: the node, its disk and node-local volumes stay. A new machine
	// class always replaces machines.
	// +kubebuilder:default=RollingReplace
	// +kubebuilder:validation:Enum=RollingReplace;InPlace
	// +optional
	UpdateStrategy UpdateStrategy `json:"updateStrategy,omitempty"`
	// DrainTimeout is how long the drain of a machine that goes away (in
	// a roll, a scale-down or a repair) may be held up, for example by a
	// PodDisruptionBudget, before its remaining pods are deleted without
	// eviction and the machine goes anyway. Unset: the drain waits as long
	// as it takes and the roll with it (reported in the pool's status and
	// by events).
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(h|m|s))+$')",messageExpression="'spec.workers[].drainTimeout: ' + self + ' is not a duration; write it like 10m, 90s or 1h'"
	// +optional
	DrainTimeout string `json:"drainTimeout,omitempty"`
	// MachineClass selects the machine provider and size: local (as big
	// as the host), small (1 CPU, 2 GiB allocatable), medium (2 CPU,
	// 4 GiB), large (4 CPU, 8 GiB); a node's allocatable and its machine's
	// cgroup limits follow the class.
	// +kubebuilder:default=local
	// +kubebuilder:validation:Enum=local;small;medium;large
	// +optional
	MachineClass string `json:"machineClass,omitempty"`
	// Labels are put on every node of the pool.
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.size() <= 253 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="spec.workers[].labels: keys must be valid label keys such as 'example.com/role' or 'tier'"
	// +optional
	Labels map[string]LabelValue `json:"labels,omitempty"`
	// Taints are put on every node of the pool.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self.all(t, t.key.size() <= 253 && t.key.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="spec.workers[].taints: keys must be valid label keys such as 'example.com/dedicated'"
	// +kubebuilder:validation:XValidation:rule="self.all(t, t.effect in ['NoSchedule', 'PreferNoSchedule', 'NoExecute'])",message="spec.workers[].taints: effect must be NoSchedule, PreferNoSchedule or NoExecute"
	// +optional
	Taints []Taint `json:"taints,omitempty"`
	// Zones the pool's machines are spread over (recorded as topology.kubernetes.io/zone).
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Zones []string `json:"zones,omitempty"`
	// Region of the pool's machines (topology.kubernetes.io/region);
	// empty: the cluster's spec.region.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Region string `json:"region,omitempty"`
	// Autoscaler tunes how a pool with minimum < maximum shrinks (it grows
	// whenever pods are unschedulable and would fit its nodes).
	// +kubebuilder:default={}
	// +optional
	Autoscaler PoolAutoscaler `json:"autoscaler"`
	// HealthCheck replaces machines whose nodes stay unhealthy, as
	// Cluster API's MachineHealthChecks do.
	// +kubebuilder:default={}
	// +optional
	HealthCheck MachineHealthCheck `json:"healthCheck"`
}

// PoolAutoscaler tunes scale-down, with the cluster-autoscaler's meaning.
type PoolAutoscaler struct {
	// ScaleDownUnneededTime is how long a node must have been unneeded
	// (its pods' requests under the threshold and all of them able to
	// move elsewhere) before it is drained and removed; a new node is not
	// considered before it is that old.
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(h|m|s))+$')",messageExpression="'spec.workers[].autoscaler.scaleDownUnneededTime: ' + self + ' is not a duration; write it like 10m or 90s'"
	// +optional
	ScaleDownUnneededTime string `json:"scaleDownUnneededTime,omitempty"`
	// ScaleDownUtilizationThreshold is the share of a node's allocatable
	// CPU and memory (the larger of the two, in percent) its pods may
	// request for the node to count as unneeded.
	// +kubebuilder:default=50
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	ScaleDownUtilizationThreshold int32 `json:"scaleDownUtilizationThreshold,omitempty"`
}

// MachineHealthCheck says when a pool's machine counts as broken and how
// many may be repaired at once.
type MachineHealthCheck struct {
	// NodeNotReadyTimeout is how long a machine's node may be NotReady or
	// Unknown (or its processes keep failing) before the machine is
	// replaced. "0s" turns repairs off.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(h|m|s))+$')",messageExpression="'spec.workers[].healthCheck.nodeNotReadyTimeout: ' + self + ' is not a duration; write it like 5m, 90s or 1h30m'"
	// +optional
	NodeNotReadyTimeout string `json:"nodeNotReadyTimeout,omitempty"`
	// NodeStartupTimeout is how long a new machine may take to become a
	// Ready node before it is replaced.
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(h|m|s))+$')",messageExpression="'spec.workers[].healthCheck.nodeStartupTimeout: ' + self + ' is not a duration; write it like 10m or 600s'"
	// +optional
	NodeStartupTimeout string `json:"nodeStartupTimeout,omitempty"`
	// MaxUnhealthy stops all repairs of the pool while more of its machines
	// than this are unhealthy (a percentage of the pool, "40%", or a count,
	// "2"; a node that is NotReady counts at once, before its timeout
	// ends): many failing at once points to a cause that new machines would
	// not fix (a network or control-plane fault), and replacing them all
	// would only make it worse.
	// +kubebuilder:default="40%"
	// +kubebuilder:validation:MaxLength=8
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+|(100|[1-9]?[0-9])%)$')",messageExpression="'spec.workers[].healthCheck.maxUnhealthy: ' + self + ' must be a percentage from 0% to 100% or a count of machines, like 40% or 2'"
	// +optional
	MaxUnhealthy string `json:"maxUnhealthy,omitempty"`
}

// Zone is the zone of the pool's machine with the given index: the pool's
// zones in turn (empty without zones).
func (p WorkerPool) Zone(index int32) string {
	if len(p.Zones) == 0 {
		return ""
	}
	return p.Zones[int(index)%len(p.Zones)]
}

// LabelValue is the value of a node label.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`
type LabelValue string

// Taint is a node taint.
type Taint struct {
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Value string `json:"value,omitempty"`
	// Effect is NoSchedule, PreferNoSchedule or NoExecute.
	// +kubebuilder:validation:MaxLength=20
	Effect string `json:"effect"`
}

// WorkerPoolStatus is the observed state of a pool.
type WorkerPoolStatus struct {
	Name string `json:"name"`
	// Desired number of machines.
	Desired int32 `json:"desired"`
	// Ready machines: their node is Ready.
	Ready int32 `json:"ready"`
	// Updated machines: they run the pool's current configuration.
	Updated int32 `json:"updated"`
	// Message says what a roll or a drain of the pool waits for.
	// +optional
	Message string `json:"message,omitempty"`
}

// UpdateStrategy is how a pool's machines move to a new version.
type UpdateStrategy string

// Update strategies.
const (
	UpdateRollingReplace UpdateStrategy = "RollingReplace"
	UpdateInPlace        UpdateStrategy = "InPlace"
)

// ReasonUpdatingInPlace is the NodeReady reason of a machine that is
// drained for, or going through, an in-place update: not a fault, so
// health checks leave it alone.
const ReasonUpdatingInPlace = "UpdatingInPlace"

// MachinePhase is where a Machine is in its life.
type MachinePhase string

// Machine phases.
const (
	MachinePending      MachinePhase = "Pending"
	MachineProvisioning MachinePhase = "Provisioning"
	MachineRunning      MachinePhase = "Running"
	MachineDeleting     MachinePhase = "Deleting"
	MachineFailed       MachinePhase = "Failed"
	// MachineStopped: the machine exists, its processes are stopped (its
	// node carries the cloud provider's shutdown taint).
	MachineStopped MachinePhase = "Stopped"
)

// Machine is one machine of a worker pool; it becomes a node of its
// cluster. Lotse creates and deletes Machines as pools scale.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=lotse
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.pool`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.status.addresses[0].address`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Machine struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MachineSpec   `json:"spec"`
	Status MachineStatus `json:"status,omitempty"`
}

// MachineSpec says what a machine is for.
// +kubebuilder:validation:XValidation:rule="self.cluster == oldSelf.cluster && self.pool == oldSelf.pool && self.machineClass == oldSelf.machineClass && self.index == oldSelf.index",message="a Machine's cluster, pool, machineClass and index are immutable; Lotse replaces machines instead of changing them (only spec.stopped, and spec.version for an in-place update, change)"
type MachineSpec struct {
	// Cluster the machine joins.
	Cluster string `json:"cluster"`
	// Pool the machine belongs to.
	Pool string `json:"pool"`
	// MachineClass selects the provider.
	MachineClass string `json:"machineClass"`
	// Version of the kubelet and kube-proxy.
	Version string `json:"version"`
	// Index is the machine's number in its cluster; the local provider
	// derives its address from it.
	Index int32 `json:"index"`
	// Stopped powers the machine off, as stopping a cloud server does: its
	// processes and containers end, its disk (and node-local volumes)
	// stays, and the cloud controller manager puts the shutdown taint on
	// its node once the node is NotReady. Unset, it starts again. Pods are
	// not drained first; hibernation drains before it stops machines.
	// +optional
	Stopped bool `json:"stopped,omitempty"`
}

// MachineAddress is an address of a machine.
type MachineAddress struct {
	Type    corev1.NodeAddressType `json:"type"`
	Address string                 `json:"address"`
}

// MachineStatus is what the provider and the node report.
type MachineStatus struct {
	// +optional
	Phase MachinePhase `json:"phase,omitempty"`
	// ProviderID identifies the machine at its provider (lotse://NAMESPACE/CLUSTER/MACHINE).
	// +optional
	ProviderID string `json:"providerID,omitempty"`
	// NodeName of the node the machine became.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// +optional
	Addresses []MachineAddress `json:"addresses,omitempty"`
	// LocalVolumesPath is where node-local volumes (the local-path
	// StorageClass) live on the machine; they go away with it.
	// +optional
	LocalVolumesPath string `json:"localVolumesPath,omitempty"`
	// TrustDigest names the cluster trust (CA bundle and signing CA) the
	// node's processes run with; a rotation of the cluster CA waits for
	// every machine to run with the current one.
	// +optional
	TrustDigest string `json:"trustDigest,omitempty"`
	// FailureMessage says why the machine failed, if it did.
	// +optional
	FailureMessage string `json:"failureMessage,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// MachineList is a list of Machines.
// +kubebuilder:object:root=true
type MachineList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Machine `json:"items"`
}
