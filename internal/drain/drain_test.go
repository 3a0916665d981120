package drain

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestDrain(t *testing.T) {
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	}
	daemon := pod("agent")
	daemon.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: "agent", APIVersion: "apps/v1", UID: "u"}}
	tests := []struct {
		name        string
		budgetFull  bool // the PodDisruptionBudget refuses evictions (429)
		force       bool
		wantBlocked bool
		wantMsg     string
		wantDeletes int
	}{
		{name: "evictions allowed", wantMsg: "evicting default/web-0"},
		{name: "a budget refuses", budgetFull: true, wantBlocked: true, wantMsg: "blocked by a PodDisruptionBudget: default/web-0"},
		{name: "forced after the timeout", budgetFull: true, force: true, wantMsg: "evicting default/web-0", wantDeletes: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
			cs := fake.NewClientset(node, pod("web-0"), daemon)
			evictions, deletes := 0, 0
			cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() != "eviction" {
					return false, nil, nil
				}
				evictions++
				if tt.budgetFull {
					return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 10)
				}
				return true, nil, nil
			})
			cs.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
				deletes++
				return false, nil, nil
			})
			drained, blocked, msg, err := Node(context.Background(), cs, "n1", tt.force)
			if err != nil {
				t.Fatal(err)
			}
			if drained {
				t.Error("drained with a pod left on the node")
			}
			if blocked != tt.wantBlocked || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("drain = blocked %v, %q; want %v, containing %q", blocked, msg, tt.wantBlocked, tt.wantMsg)
			}
			if strings.Contains(msg, "agent") {
				t.Errorf("a DaemonSet pod is drained: %q", msg)
			}
			if deletes != tt.wantDeletes {
				t.Errorf("%d pod deletions, want %d", deletes, tt.wantDeletes)
			}
			if tt.force && evictions != 0 {
				t.Errorf("a forced drain asked for %d evictions", evictions)
			}
			n, _ := cs.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
			if !n.Spec.Unschedulable {
				t.Error("node not cordoned")
			}
		})
	}
}
