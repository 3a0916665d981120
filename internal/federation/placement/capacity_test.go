package placement

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func list(kv ...string) corev1.ResourceList {
	out := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		out[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return out
}

func TestEstimate(t *testing.T) {
	for _, tc := range []struct {
		name         string
		free, perPod corev1.ResourceList
		want         int64
	}{
		{"unknown room", nil, list("cpu", "100m"), -1},
		{"cpu is the tightest", list("cpu", "1", "memory", "8Gi", "pods", "100"), list("cpu", "300m", "memory", "256Mi"), 3},
		{"memory is the tightest", list("cpu", "4", "memory", "1Gi", "pods", "100"), list("cpu", "100m", "memory", "300Mi"), 3},
		{"pod slots when nothing is requested", list("cpu", "4", "pods", "7"), nil, 7},
		{"pod slots are the tightest", list("cpu", "4", "pods", "2"), list("cpu", "100m"), 2},
		{"a resource the member lacks", list("cpu", "4", "pods", "10"), list("nvidia.com/gpu", "1"), 0},
		{"no slots and no requests say nothing", list("cpu", "4"), nil, -1},
		{"petabytes do not overflow", list("ephemeral-storage", "20Pi", "pods", "1000"), list("ephemeral-storage", "1Ti"), 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Estimate(tc.free, tc.perPod); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestFreeAndPodRequests(t *testing.T) {
	free := Free(list("cpu", "2", "memory", "4Gi", "pods", "110"), list("cpu", "2500m", "memory", "1Gi", "pods", "10"))
	if q := free[corev1.ResourceCPU]; !q.IsZero() {
		t.Errorf("over-committed cpu: free %s, want 0", q.String())
	}
	if q := free[corev1.ResourceMemory]; q.Cmp(resource.MustParse("3Gi")) != 0 {
		t.Errorf("free memory %s, want 3Gi", q.String())
	}
	if q := free[corev1.ResourcePods]; q.Value() != 100 {
		t.Errorf("free pods %s, want 100", q.String())
	}
	if Free(nil, list("cpu", "1")) != nil {
		t.Error("unknown allocatable gives a room")
	}

	spec := &corev1.PodSpec{
		InitContainers: []corev1.Container{{Resources: corev1.ResourceRequirements{Requests: list("cpu", "1", "memory", "10Mi")}}},
		Containers: []corev1.Container{
			{Resources: corev1.ResourceRequirements{Requests: list("cpu", "200m", "memory", "100Mi")}},
			{Resources: corev1.ResourceRequirements{Requests: list("cpu", "300m", "memory", "50Mi")}},
		},
		Overhead: list("memory", "1Mi"),
	}
	got := PodRequests(spec)
	for name, want := range map[corev1.ResourceName]string{"cpu": "1", "memory": "151Mi"} {
		if q := got[name]; q.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("%s: got %s, want %s", name, q.String(), want)
		}
	}
	always := corev1.ContainerRestartPolicyAlways
	spec.InitContainers = append([]corev1.Container{{RestartPolicy: &always, Resources: corev1.ResourceRequirements{Requests: list("cpu", "100m", "memory", "20Mi")}}},
		spec.InitContainers...)
	got = PodRequests(spec)
	// Containers + sidecar: 600m, 170Mi (+1Mi overhead); the init container
	// after the sidecar: 1100m.
	for name, want := range map[corev1.ResourceName]string{"cpu": "1100m", "memory": "171Mi"} {
		if q := got[name]; q.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("%s: got %s, want %s", name, q.String(), want)
		}
	}
}
