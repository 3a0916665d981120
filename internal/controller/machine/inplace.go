package machine

// In-place updates (a pool's updateStrategy InPlace): the cluster
// controller changes a Machine's spec.version; this controller drains the
// node, lets the provider swap the kubelet and kube-proxy (the machine's
// processes run the new release's binaries), and uncordons the node once
// it is Ready at the new version. The node, the machine's disk and its
// node-local volumes stay. Each step is read from the node (its kubelet
// version and the annotation below), so a lotse killed in between goes on.

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/drain"
)

// InPlaceUpdateAnnotation on a Node marks an in-place update Lotse
// started: "VERSION@RFC3339" (the target and when the drain began). It
// says the cordon is Lotse's, to be lifted when the update is done.
const InPlaceUpdateAnnotation = "lotse.dev/in-place-update"

// inPlaceDue says whether a node's kubelet runs another version than the
// machine's spec.
func inPlaceDue(node *corev1.Node, version string) bool {
	v := node.Status.NodeInfo.KubeletVersion
	return v != "" && v != "v"+version
}

// drainForUpdate marks the node and drains it, as a deletion would (the
// pool's drainTimeout counts from the mark).
func (r *Reconciler) drainForUpdate(ctx context.Context, cs kubernetes.Interface, m *lotsev1.Machine, cluster *lotsev1.Cluster, node *corev1.Node) (bool, string, error) {
	target, since := parseMark(node.Annotations[InPlaceUpdateAnnotation])
	if target != m.Spec.Version {
		since = time.Now()
		mark := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, InPlaceUpdateAnnotation, m.Spec.Version+"@"+since.UTC().Format(time.RFC3339))
		if _, err := cs.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, []byte(mark), metav1.PatchOptions{}); err != nil {
			return false, "", err
		}
		r.event(m, corev1.EventTypeNormal, "UpdatingInPlace", "InPlaceUpdate", "draining %s to update it from %s to v%s in place", node.Name, node.Status.NodeInfo.KubeletVersion, m.Spec.Version)
	}
	timeout, hasTimeout := drainTimeout(cluster, m.Spec.Pool)
	force := hasTimeout && time.Since(since) >= timeout
	drained, blocked, msg, err := drain.Node(ctx, cs, node.Name, force)
	if err != nil || drained {
		return drained, msg, err
	}
	if blocked {
		msg += "; the update waits for the budget to allow it"
	}
	return false, msg, nil
}

// finishUpdate uncordons a node whose in-place update is done (its kubelet
// runs the machine's version and it is Ready) and removes the mark.
func (r *Reconciler) finishUpdate(ctx context.Context, cs kubernetes.Interface, m *lotsev1.Machine, node *corev1.Node, ready bool) (bool, error) {
	if inPlaceDue(node, m.Spec.Version) || !ready {
		return false, nil
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:null}},"spec":{"unschedulable":null}}`, InPlaceUpdateAnnotation)
	if _, err := cs.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return false, err
	}
	r.event(m, corev1.EventTypeNormal, "UpdatedInPlace", "InPlaceUpdate", "%s runs v%s and is schedulable again", node.Name, m.Spec.Version)
	return true, nil
}

// parseMark reads "VERSION@RFC3339".
func parseMark(s string) (string, time.Time) {
	version, at, ok := strings.Cut(s, "@")
	if !ok {
		return "", time.Time{}
	}
	t, _ := time.Parse(time.RFC3339, at)
	return version, t
}
