package placement

import (
	"math"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/component-helpers/resource"
)

// Free is a member's room: the allocatable resources of its Ready nodes
// minus the requests of the pods on them ("pods" counts pod slots).
func Free(allocatable, allocated corev1.ResourceList) corev1.ResourceList {
	if allocatable == nil {
		return nil
	}
	free := corev1.ResourceList{}
	for name, q := range allocatable {
		left := q.DeepCopy()
		if used, ok := allocated[name]; ok {
			left.Sub(used)
		}
		if left.Sign() < 0 {
			left = resource.Quantity{}
		}
		free[name] = left
	}
	return free
}

// Estimate is how many more pods with the given requests fit into free
// room: the tightest of the requested resources and the pod slots; -1
// when the room is unknown. A resource the member does not offer at all
// fits no pod that requests it.
func Estimate(free, perPod corev1.ResourceList) int64 {
	if free == nil {
		return -1
	}
	n := int64(math.MaxInt64)
	if slots, ok := free[corev1.ResourcePods]; ok {
		n = slots.Value()
	}
	for name, want := range perPod {
		if name == corev1.ResourcePods || want.IsZero() {
			continue
		}
		have, ok := free[name]
		if !ok {
			return 0
		}
		// Floats: MilliValue overflows for petabytes of storage.
		n = min(n, int64(math.Floor(have.AsApproximateFloat64()/want.AsApproximateFloat64())))
	}
	if n == math.MaxInt64 { // neither slots nor requests say anything
		return -1
	}
	return n
}

// PodRequests is what one pod of a template requests, computed the way
// the scheduler does (sidecars, init containers, pod-level requests and
// overhead), by the upstream helper so the two never disagree.
func PodRequests(spec *corev1.PodSpec) corev1.ResourceList {
	return resourcehelper.PodRequests(&corev1.Pod{Spec: *spec}, resourcehelper.PodResourcesOptions{})
}
