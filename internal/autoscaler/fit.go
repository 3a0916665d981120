// Package autoscaler decides how worker pools grow and shrink, with the
// semantics of the Kubernetes cluster-autoscaler (which cannot run here):
// a pool grows when pods are unschedulable and would fit a new node of
// it, choosing among pools by least waste; a node goes when its pods'
// requests stay under a threshold for a while and its pods fit elsewhere.
// The package only computes; the cluster controller acts.
package autoscaler

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/klog/v2"
)

// Requests are a pod's CPU (millicores) and memory (bytes) requests, as
// the scheduler counts them (see PodRequests).
type Requests struct{ CPU, Memory int64 }

// Add returns r + o.
func (r Requests) Add(o Requests) Requests { return Requests{r.CPU + o.CPU, r.Memory + o.Memory} }

// Sub returns r - o.
func (r Requests) Sub(o Requests) Requests { return Requests{r.CPU - o.CPU, r.Memory - o.Memory} }

// Fits reports whether r fits into free.
func (r Requests) Fits(free Requests) bool { return r.CPU <= free.CPU && r.Memory <= free.Memory }

// FromList reads CPU and memory of a resource list.
func FromList(l corev1.ResourceList) Requests {
	return Requests{CPU: l.Cpu().MilliValue(), Memory: l.Memory().Value()}
}

// PodRequests are what a pod asks for, as the scheduler counts it
// (sidecars, init containers, pod-level requests and overhead).
func PodRequests(p *corev1.Pod) Requests {
	return FromList(resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{}))
}

// Template is what a new node of a pool looks like to the scheduler.
type Template struct {
	Labels      map[string]string
	Taints      []corev1.Taint
	Allocatable Requests
}

// Schedulable says whether the scheduler could put pod on a node like t
// at all (labels, taints, affinity), leaving resources aside; if not, why.
func Schedulable(pod *corev1.Pod, t Template) (bool, string) {
	for _, taint := range t.Taints {
		if taint.Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		if !tolerates(pod.Spec.Tolerations, taint) {
			return false, fmt.Sprintf("does not tolerate the taint %s=%s:%s", taint.Key, taint.Value, taint.Effect)
		}
	}
	for k, v := range pod.Spec.NodeSelector {
		if t.Labels[k] != v {
			return false, fmt.Sprintf("its nodeSelector %s=%s does not match", k, v)
		}
	}
	if a := pod.Spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		terms := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
		matched := false
		for _, term := range terms {
			if termMatches(term, t.Labels) {
				matched = true
				break
			}
		}
		if !matched {
			return false, "its required node affinity does not match"
		}
	}
	return true, ""
}

func tolerates(tolerations []corev1.Toleration, taint corev1.Taint) bool {
	for i := range tolerations {
		if tolerations[i].ToleratesTaint(klog.Background(), &taint, true) {
			return true
		}
	}
	return false
}

// termMatches evaluates a node selector term's label expressions (field
// expressions name metadata.name, which a node that does not exist yet
// cannot match).
func termMatches(term corev1.NodeSelectorTerm, nodeLabels map[string]string) bool {
	if len(term.MatchFields) > 0 {
		return false
	}
	if len(term.MatchExpressions) == 0 {
		return false // an empty term matches nothing
	}
	set := labels.Set(nodeLabels)
	for _, e := range term.MatchExpressions {
		v, has := set[e.Key]
		switch e.Operator {
		case corev1.NodeSelectorOpIn:
			if !has || !contains(e.Values, v) {
				return false
			}
		case corev1.NodeSelectorOpNotIn:
			if has && contains(e.Values, v) {
				return false
			}
		case corev1.NodeSelectorOpExists:
			if !has {
				return false
			}
		case corev1.NodeSelectorOpDoesNotExist:
			if has {
				return false
			}
		case corev1.NodeSelectorOpGt, corev1.NodeSelectorOpLt:
			if !has || len(e.Values) != 1 {
				return false
			}
			n, err1 := strconv.ParseInt(v, 10, 64)
			limit, err2 := strconv.ParseInt(e.Values[0], 10, 64)
			if err1 != nil || err2 != nil || (e.Operator == corev1.NodeSelectorOpGt && n <= limit) || (e.Operator == corev1.NodeSelectorOpLt && n >= limit) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func contains(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

// Quantity formats millicores and bytes for messages.
func (r Requests) String() string {
	return fmt.Sprintf("cpu %s, memory %s", resource.NewMilliQuantity(r.CPU, resource.DecimalSI), resource.NewQuantity(r.Memory, resource.BinarySI))
}
