package placement

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Room is what a member's nodes hold, as Measure counts it.
type Room struct {
	Nodes, ReadyNodes int
	// Zone is the first node's topology label.
	Zone string
	// Allocatable sums the Ready, schedulable nodes that repel no pods;
	// Allocated the requests of their unfinished pods (pods counts them).
	// Allocated is nil when the pods could not be listed: the room is
	// unknown then.
	Allocatable, Allocated corev1.ResourceList
}

// Measure counts a member's nodes (through nodes) and sums their room
// (through pods, which may be a client with a longer timeout: a large
// member lists many pods). Failing to list the pods is no error: the
// room is unknown then.
func Measure(ctx context.Context, nodes, pods kubernetes.Interface) (Room, error) {
	var r Room
	list, err := nodes.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return r, fmt.Errorf("list nodes: %v", err)
	}
	r.Nodes = len(list.Items)
	usable := map[string]bool{}
	// Pod slots always appear, so a member without nodes has room for
	// none (not an unknown room).
	r.Allocatable = corev1.ResourceList{corev1.ResourcePods: resource.Quantity{Format: resource.DecimalSI}}
	for _, n := range list.Items {
		if r.Zone == "" {
			r.Zone = n.Labels[corev1.LabelTopologyZone]
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				r.ReadyNodes++
				if !n.Spec.Unschedulable && !repels(n.Spec.Taints) {
					usable[n.Name] = true
					addResources(r.Allocatable, n.Status.Allocatable, nil)
				}
			}
		}
	}
	podList, err := pods.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{ResourceVersion: "0",
		FieldSelector: "status.phase!=Succeeded,status.phase!=Failed"})
	if err != nil {
		return r, nil
	}
	allocated := corev1.ResourceList{}
	count := int64(0)
	for i := range podList.Items {
		pod := &podList.Items[i]
		if !usable[pod.Spec.NodeName] {
			continue
		}
		count++
		addResources(allocated, PodRequests(&pod.Spec), r.Allocatable)
	}
	allocated[corev1.ResourcePods] = *resource.NewQuantity(count, resource.DecimalSI)
	r.Allocated = allocated
	return r, nil
}

// repels reports whether a node's taints keep ordinary pods off it
// (control-plane nodes, nodes being drained or failing).
func repels(taints []corev1.Taint) bool {
	for _, t := range taints {
		if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
			return true
		}
	}
	return false
}

// addResources adds b to a, only the resources in only when it is set.
func addResources(a, b, only corev1.ResourceList) {
	for name, q := range b {
		if _, ok := only[name]; only != nil && !ok {
			continue
		}
		sum := a[name]
		sum.Add(q)
		a[name] = sum
	}
}
