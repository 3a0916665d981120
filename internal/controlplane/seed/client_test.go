package seed

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodTrouble(t *testing.T) {
	pod := func(status corev1.PodStatus) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kube-apiserver-1"}, Status: status}
	}
	for _, tc := range []struct {
		name string
		pod  corev1.Pod
		want string
	}{
		{"running", pod(corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "kube-apiserver", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}), ""},
		{"creating says nothing", pod(corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "kube-apiserver", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}}), ""},
		{"unschedulable", pod(corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Message: "0/2 nodes are available: 2 Insufficient cpu."}}}),
			"kube-apiserver-1: 0/2 nodes are available: 2 Insufficient cpu."},
		{"crash loop with its last exit", pod(corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "kube-apiserver",
			State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s"}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}}),
			"kube-apiserver-1/kube-apiserver: CrashLoopBackOff: back-off 40s; last exit 1 Error"},
		{"long messages are cut", pod(corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "c",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull", Message: strings.Repeat("x", 500)}}}}}),
			"kube-apiserver-1/c: ErrImageNeverPull: " + strings.Repeat("x", 300-len("kube-apiserver-1/c: ErrImageNeverPull: ")) + "..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PodTrouble(tc.pod); got != tc.want {
				t.Errorf("PodTrouble = %q\nwant          %q", got, tc.want)
			}
		})
	}
}
