package propagation

import (
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
)

// replicaFields are the counters of workload statuses that add up over
// members.
var replicaFields = map[string][]string{
	"Deployment":  {"replicas", "readyReplicas", "availableReplicas", "updatedReplicas", "unavailableReplicas", "terminatingReplicas"},
	"StatefulSet": {"replicas", "readyReplicas", "availableReplicas", "updatedReplicas", "currentReplicas"},
	"DaemonSet":   {"currentNumberScheduled", "desiredNumberScheduled", "numberAvailable", "numberMisscheduled", "numberReady", "numberUnavailable", "updatedNumberScheduled"},
	"Job":         {"active", "succeeded", "failed", "ready", "terminating"},
}

// worseWhenHigher are the counters where a higher number is worse.
var worseWhenHigher = []string{"replicas", "unavailableReplicas", "terminatingReplicas", "numberUnavailable", "numberMisscheduled", "failed"}

// health says whether a member's copy is healthy, from its status.
func health(kind string, obj *unstructured.Unstructured) string {
	if obj == nil {
		return workv1.HealthUnknown
	}
	get := func(f string) int64 {
		v, _, _ := unstructured.NestedInt64(obj.Object, "status", f)
		return v
	}
	observed := get("observedGeneration") >= obj.GetGeneration()
	switch kind {
	case "Deployment", "StatefulSet":
		want, _, _ := unstructured.NestedInt64(obj.Object, "spec", "replicas")
		if observed && get("readyReplicas") >= want && get("updatedReplicas") >= want {
			return workv1.HealthHealthy
		}
		return workv1.HealthUnhealthy
	case "DaemonSet":
		if observed && get("numberReady") >= get("desiredNumberScheduled") {
			return workv1.HealthHealthy
		}
		return workv1.HealthUnhealthy
	case "Job":
		if get("failed") > 0 && get("active") == 0 && get("succeeded") == 0 {
			return workv1.HealthUnhealthy
		}
		return workv1.HealthHealthy
	case "PersistentVolumeClaim":
		if phase, _, _ := unstructured.NestedString(obj.Object, "status", "phase"); phase == "Bound" {
			return workv1.HealthHealthy
		}
		return workv1.HealthUnhealthy
	}
	// Other kinds (a custom kind among them) say it with a Ready or
	// Available condition, if they have one.
	conditions, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conditions {
		cm, _ := c.(map[string]any)
		if (cm["type"] == "Ready" || cm["type"] == "Available") && cm["status"] == "False" {
			return workv1.HealthUnhealthy
		}
	}
	return workv1.HealthHealthy
}

// aggregate is the template's .status made from its members' copies:
// counters add up when the replicas are divided; when every member runs
// the full count (duplicated), each counter is the lowest any member
// reports, so `kubectl rollout status` waits for the slowest member.
// observedGeneration is the template's generation once every member
// carries the current template and its controller saw it. ok is false for
// kinds whose status is not aggregated.
func aggregate(template *unstructured.Unstructured, kind string, copies map[string]*unstructured.Unstructured, current, duplicated bool) (map[string]any, bool) {
	switch kind {
	case "Deployment", "StatefulSet", "DaemonSet", "Job":
	case "Service", "PersistentVolumeClaim":
		return aggregateFirst(copies, kind), true
	default:
		return nil, false
	}
	status := map[string]any{}
	allObserved := current
	for _, f := range replicaFields[kind] {
		var sum int64
		lowest, highest := int64(-1), int64(0)
		for _, c := range copies {
			v, _, _ := unstructured.NestedInt64(c.Object, "status", f)
			sum += v
			if lowest < 0 || v < lowest {
				lowest = v
			}
			highest = max(highest, v)
		}
		if duplicated && len(copies) > 1 && lowest >= 0 {
			// Progress is the slowest member's; what is too many or wrong
			// is the worst member's.
			sum = lowest
			if slices.Contains(worseWhenHigher, f) {
				sum = highest
			}
		}
		status[f] = sum
	}
	for _, c := range copies {
		og, _, _ := unstructured.NestedInt64(c.Object, "status", "observedGeneration")
		if og < c.GetGeneration() {
			allObserved = false
		}
	}
	if kind != "Job" {
		if allObserved {
			status["observedGeneration"] = template.GetGeneration()
		} else if old, ok, _ := unstructured.NestedInt64(template.Object, "status", "observedGeneration"); ok {
			status["observedGeneration"] = old
		}
	}
	return status, true
}

// aggregateFirst: a Service's load-balancer ingress and a PVC's phase are
// the union and the worst of the members'.
func aggregateFirst(copies map[string]*unstructured.Unstructured, kind string) map[string]any {
	switch kind {
	case "Service":
		var ingress []any
		for _, name := range sortedKeys(copies) {
			list, _, _ := unstructured.NestedSlice(copies[name].Object, "status", "loadBalancer", "ingress")
			ingress = append(ingress, list...)
		}
		if len(ingress) == 0 {
			return map[string]any{"loadBalancer": map[string]any{}}
		}
		return map[string]any{"loadBalancer": map[string]any{"ingress": ingress}}
	default: // PersistentVolumeClaim
		phase := ""
		for _, name := range sortedKeys(copies) {
			p, _, _ := unstructured.NestedString(copies[name].Object, "status", "phase")
			if phase == "" || p != "Bound" {
				phase = p
			}
		}
		if phase == "" {
			return map[string]any{}
		}
		return map[string]any{"phase": phase}
	}
}
