package autoscaler

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
)

// Group is a pool that may grow.
type Group struct {
	Name     string
	Template Template
	// Overhead are the requests of the DaemonSet pods a new node runs.
	Overhead Requests
	// Room is how many nodes the pool may still add (maximum - desired).
	Room int
	// Upcoming is how many of its nodes are on their way (machines that
	// are not Ready nodes yet): pending pods go there first, as the
	// scheduler will put them there once they are Ready.
	Upcoming int
}

// UpPlan is how the pools grow.
type UpPlan struct {
	// Add is how many nodes each pool adds.
	Add map[string]int
	// Unplaceable are pending pods no pool can take, with why.
	Unplaceable map[string]string
}

// ScaleUp places pending pods on new nodes: for the pods still without a
// place, each pool that could take some of them is tried (first fit,
// largest pods first, at most its room), and the option that places the
// most pods with the least waste (unused CPU and memory of its new nodes)
// wins, as the cluster-autoscaler's least-waste expander chooses. Repeated
// until no pool helps.
//
// Pods that fit the free room of an existing Ready node (the scheduler
// has not retried them yet) or of a node on its way need nothing new.
func ScaleUp(pending []*corev1.Pod, groups []Group, existing []Node) UpPlan {
	plan := UpPlan{Add: map[string]int{}, Unplaceable: map[string]string{}}
	remaining := fitExisting(pending, existing)
	sort.SliceStable(remaining, func(i, j int) bool {
		a, b := PodRequests(remaining[i]), PodRequests(remaining[j])
		return a.CPU+a.Memory/(1<<20) > b.CPU+b.Memory/(1<<20)
	})
	room := map[string]int{}
	for _, g := range groups {
		room[g.Name] = g.Room
	}
	// Pods that nodes on their way will take need nothing new.
	for _, g := range groups {
		free := g.Template.Allocatable.Sub(g.Overhead)
		bins := make([]Requests, g.Upcoming)
		for i := range bins {
			bins[i] = free
		}
		var rest []*corev1.Pod
		for _, p := range remaining {
			placed := false
			if ok, _ := Schedulable(p, g.Template); ok {
				req := PodRequests(p)
				for i := range bins {
					if req.Fits(bins[i]) {
						bins[i] = bins[i].Sub(req)
						placed = true
						break
					}
				}
			}
			if !placed {
				rest = append(rest, p)
			}
		}
		remaining = rest
	}
	for len(remaining) > 0 {
		type option struct {
			group  string
			nodes  int
			placed map[*corev1.Pod]bool
			waste  float64
		}
		var best *option
		for _, g := range groups {
			if room[g.Name] <= 0 {
				continue
			}
			free := g.Template.Allocatable.Sub(g.Overhead)
			var bins []Requests // free capacity of each new node
			placed := map[*corev1.Pod]bool{}
			for _, p := range remaining {
				if ok, _ := Schedulable(p, g.Template); !ok {
					continue
				}
				req := PodRequests(p)
				if !req.Fits(free) {
					continue
				}
				done := false
				for i := range bins {
					if req.Fits(bins[i]) {
						bins[i] = bins[i].Sub(req)
						done = true
						break
					}
				}
				if !done && len(bins) < room[g.Name] {
					bins = append(bins, free.Sub(req))
					done = true
				}
				if done {
					placed[p] = true
				}
			}
			if len(placed) == 0 {
				continue
			}
			var waste float64
			for _, b := range bins {
				if free.CPU > 0 {
					waste += float64(b.CPU) / float64(free.CPU)
				}
				if free.Memory > 0 {
					waste += float64(b.Memory) / float64(free.Memory)
				}
			}
			o := &option{group: g.Name, nodes: len(bins), placed: placed, waste: waste / float64(2*len(bins))}
			better := best == nil || len(o.placed) > len(best.placed) ||
				(len(o.placed) == len(best.placed) && (o.waste < best.waste || (o.waste == best.waste && o.nodes < best.nodes)))
			if better {
				best = o
			}
		}
		if best == nil {
			break
		}
		plan.Add[best.group] += best.nodes
		room[best.group] -= best.nodes
		var rest []*corev1.Pod
		for _, p := range remaining {
			if !best.placed[p] {
				rest = append(rest, p)
			}
		}
		remaining = rest
	}
	for _, p := range remaining {
		plan.Unplaceable[p.Namespace+"/"+p.Name] = whyNot(p, groups, room)
	}
	return plan
}

// fitExisting returns the pods that do not fit the free room of the
// existing Ready, schedulable nodes (first fit).
func fitExisting(pending []*corev1.Pod, existing []Node) []*corev1.Pod {
	free := map[string]Requests{}
	for _, n := range existing {
		free[n.Name] = n.free()
	}
	var rest []*corev1.Pod
	for _, p := range pending {
		placed := false
		for _, n := range existing {
			if !n.Ready || n.Unschedulable {
				continue
			}
			if ok, _ := Schedulable(p, n.Template); ok && PodRequests(p).Fits(free[n.Name]) {
				free[n.Name] = free[n.Name].Sub(PodRequests(p))
				placed = true
				break
			}
		}
		if !placed {
			rest = append(rest, p)
		}
	}
	return rest
}

// free is a node's allocatable minus its pods' requests.
func (n Node) free() Requests {
	left := n.Template.Allocatable
	for _, p := range n.Pods {
		if !done(p) {
			left = left.Sub(PodRequests(p))
		}
	}
	return left
}

// whyNot explains why no pool can take a pod.
func whyNot(p *corev1.Pod, groups []Group, room map[string]int) string {
	if len(groups) == 0 {
		return "no pool can grow (minimum = maximum everywhere)"
	}
	var reasons []string
	for _, g := range groups {
		switch ok, why := Schedulable(p, g.Template); {
		case !ok:
			reasons = append(reasons, fmt.Sprintf("pool %s: %s", g.Name, why))
		case !PodRequests(p).Fits(g.Template.Allocatable.Sub(g.Overhead)):
			reasons = append(reasons, fmt.Sprintf("pool %s: it requests %s, more than a node offers (%s after DaemonSets)",
				g.Name, PodRequests(p), g.Template.Allocatable.Sub(g.Overhead)))
		case room[g.Name] <= 0:
			reasons = append(reasons, fmt.Sprintf("pool %s: at its maximum", g.Name))
		}
	}
	return fmt.Sprint(reasons)
}

// Node is a node as scale-down sees it.
type Node struct {
	Name          string
	Template      Template // its labels, taints and allocatable
	Pods          []*corev1.Pod
	Ready         bool
	Unschedulable bool
}

// Annotations the cluster-autoscaler defines, honoured here too.
const (
	SafeToEvictAnnotation = "cluster-autoscaler.kubernetes.io/safe-to-evict"
)

func daemonOrMirror(p *corev1.Pod) bool {
	if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return true
	}
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}

func done(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// Utilization is the larger of the node's CPU and memory requested by its
// pods (DaemonSet and mirror pods aside), over its allocatable.
func Utilization(n Node) float64 {
	var sum Requests
	for _, p := range n.Pods {
		if !daemonOrMirror(p) && !done(p) {
			sum = sum.Add(PodRequests(p))
		}
	}
	var u float64
	if a := n.Template.Allocatable; a.CPU > 0 {
		u = float64(sum.CPU) / float64(a.CPU)
	}
	if a := n.Template.Allocatable; a.Memory > 0 {
		u = max(u, float64(sum.Memory)/float64(a.Memory))
	}
	return u
}

// Movable says whether a pod may be moved off a node that goes away: it
// must have a controller that recreates it and no node-local data, unless
// it is annotated safe to evict; annotated not safe, it never moves.
func Movable(p *corev1.Pod) (bool, string) {
	switch p.Annotations[SafeToEvictAnnotation] {
	case "false":
		return false, "annotated " + SafeToEvictAnnotation + "=false"
	case "true":
		return true, ""
	}
	if len(p.OwnerReferences) == 0 {
		return false, "it has no controller that would recreate it"
	}
	for _, v := range p.Spec.Volumes {
		if v.EmptyDir != nil || v.HostPath != nil {
			return false, fmt.Sprintf("it keeps data on the node (volume %s); annotate it %s=true to allow", v.Name, SafeToEvictAnnotation)
		}
	}
	return true, ""
}

// Removable says whether a node may go: every pod on it (DaemonSet and
// mirror pods aside) is movable and fits on one of the other Ready,
// schedulable nodes (first fit).
func Removable(n Node, others []Node) (bool, string) {
	free := map[string]Requests{}
	var targets []Node
	for _, o := range others {
		if o.Name == n.Name || !o.Ready || o.Unschedulable {
			continue
		}
		free[o.Name] = o.free()
		targets = append(targets, o)
	}
	for _, p := range n.Pods {
		if daemonOrMirror(p) || done(p) || p.DeletionTimestamp != nil {
			continue
		}
		if ok, why := Movable(p); !ok {
			return false, fmt.Sprintf("pod %s/%s cannot move: %s", p.Namespace, p.Name, why)
		}
		req := PodRequests(p)
		placed := false
		for _, o := range targets {
			if ok, _ := Schedulable(p, o.Template); ok && req.Fits(free[o.Name]) {
				free[o.Name] = free[o.Name].Sub(req)
				placed = true
				break
			}
		}
		if !placed {
			return false, fmt.Sprintf("pod %s/%s fits on no other node", p.Namespace, p.Name)
		}
	}
	return true, ""
}
