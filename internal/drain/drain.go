// Package drain empties a node of its workloads, as kubectl drain does:
// cordon, then evict (or delete) every pod but DaemonSet and mirror pods.
package drain

import (
	"context"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Node cordons a node and evicts its pods through the Eviction API, so
// PodDisruptionBudgets are honoured; DaemonSet and mirror pods stay. blocked
// says a budget refused an eviction. With force the pods are deleted
// instead (the pool's drainTimeout passed).
func Node(ctx context.Context, cs kubernetes.Interface, nodeName string, force bool) (drained, blocked bool, msg string, err error) {
	node, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, false, "", nil
	}
	if err != nil {
		return false, false, "", err
	}
	if !node.Spec.Unschedulable {
		node.Spec.Unschedulable = true
		if _, err := cs.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
			return false, false, "", err
		}
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + nodeName})
	if err != nil {
		return false, false, "", err
	}
	var left, held []string
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror || ownedByDaemonSet(&p) {
			continue
		}
		name := p.Namespace + "/" + p.Name
		left = append(left, name)
		if p.DeletionTimestamp != nil {
			continue
		}
		if force {
			if err := cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return false, false, "", err
			}
			continue
		}
		ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}}
		switch err := cs.PolicyV1().Evictions(p.Namespace).Evict(ctx, ev); {
		case err == nil, apierrors.IsNotFound(err):
		case apierrors.IsTooManyRequests(err):
			// The disruption budget allows no eviction now.
			held = append(held, name)
		default:
			return false, false, "", err
		}
	}
	if len(left) == 0 {
		return true, false, "", nil
	}
	slices.Sort(left)
	msg = "evicting " + strings.Join(left, ", ")
	if len(held) > 0 {
		slices.Sort(held)
		msg += "; blocked by a PodDisruptionBudget: " + strings.Join(held, ", ")
	}
	return false, len(held) > 0, msg, nil
}

func ownedByDaemonSet(p *corev1.Pod) bool {
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}
