package cluster

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func waiting(image, reason string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Image: image, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}
}

func TestFailedPulls(t *testing.T) {
	tests := []struct {
		name string
		pod  corev1.PodStatus
		want []string
	}{
		{"running", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Image: "a", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}, nil},
		{"creating", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("a", "ContainerCreating")}}, nil},
		{"pull failed", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("a", "ErrImagePull"), waiting("b", "ContainerCreating")}}, []string{"a"}},
		{"back-off in an init container", corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{waiting("i", "ImagePullBackOff")}}, []string{"i"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := failedPulls(&corev1.Pod{Status: tt.pod})
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("failedPulls = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestReportImageNotInBundle(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"}}
	for i := 0; i < 3; i++ { // a pod in back-off reports again and again: one event
		if err := reportImageNotInBundle(ctx, cs, pod, "registry.k8s.io/x:1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := reportImageNotInBundle(ctx, cs, pod, "registry.k8s.io/y:1"); err != nil {
		t.Fatal(err)
	}
	evs, err := cs.CoreV1().Events("ns").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) != 2 {
		t.Fatalf("%d events, want one per image", len(evs.Items))
	}
	for _, e := range evs.Items {
		if e.Reason != ReasonImageNotInBundle || e.Type != corev1.EventTypeWarning || e.InvolvedObject.Name != "p" ||
			!strings.Contains(e.Message, "lotse image add") {
			t.Errorf("event %+v", e)
		}
	}
}
