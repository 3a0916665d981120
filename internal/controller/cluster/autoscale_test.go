package cluster

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

func TestPoolDesired(t *testing.T) {
	pool := lotsev1.WorkerPool{Name: "auto", Minimum: 1, Maximum: 4}
	fixed := lotsev1.WorkerPool{Name: "fixed", Minimum: 2, Maximum: 2}
	withStatus := func(desired int32) *lotsev1.Cluster {
		c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1", UID: "uid-1"}}
		c.Status.Workers = []lotsev1.WorkerPoolStatus{{Name: "auto", Desired: desired}, {Name: "fixed", Desired: 7}}
		return c
	}
	tests := []struct {
		name   string
		c      *lotsev1.Cluster
		pool   lotsev1.WorkerPool
		memory int // what this lotse decided last (0: nothing)
		want   int
	}{
		{"without autoscaling: the minimum", withStatus(7), fixed, 0, 2},
		{"from the status after a restart", withStatus(3), pool, 0, 3},
		{"never above the maximum", withStatus(9), pool, 0, 4},
		{"never below the minimum", withStatus(0), pool, 0, 1},
		{"the last decision wins over a status not written yet", withStatus(2), pool, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Reconciler{}
			if tt.memory > 0 {
				r.desired.Store(poolKey(tt.c, tt.pool.Name), tt.memory)
			}
			if got := r.poolDesired(tt.c, tt.pool); got != tt.want {
				t.Errorf("poolDesired = %d, want %d", got, tt.want)
			}
		})
	}
	// A new cluster of the same name starts from its own state.
	r := &Reconciler{}
	old := withStatus(3)
	r.desired.Store(poolKey(old, "auto"), 4)
	fresh := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1", UID: "uid-2"}}
	if got := r.poolDesired(fresh, pool); got != 1 {
		t.Errorf("a new cluster named like a deleted one starts at %d machines, want its minimum 1", got)
	}
	r.forgetAutoscaling(old)
	if _, ok := r.desired.Load(poolKey(old, "auto")); ok {
		t.Error("a deleted cluster's pool size is still remembered")
	}
}

func TestUnschedulable(t *testing.T) {
	cond := func(status corev1.ConditionStatus, reason string) []corev1.PodCondition {
		return []corev1.PodCondition{{Type: corev1.PodScheduled, Status: status, Reason: reason}}
	}
	tests := []struct {
		name string
		pod  corev1.Pod
		want bool
	}{
		{"marked unschedulable", corev1.Pod{Status: corev1.PodStatus{Conditions: cond(corev1.ConditionFalse, corev1.PodReasonUnschedulable)}}, true},
		{"not looked at yet", corev1.Pod{}, false},
		{"scheduled", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Conditions: cond(corev1.ConditionTrue, "")}}, false},
		{"being deleted", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &metav1.Time{}},
			Status: corev1.PodStatus{Conditions: cond(corev1.ConditionFalse, corev1.PodReasonUnschedulable)}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := unschedulable(&tt.pod); got != tt.want {
				t.Errorf("unschedulable = %v, want %v", got, tt.want)
			}
		})
	}
}
