package autoscaler

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pod(name string, cpu, mem string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default",
		OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "rs", APIVersion: "apps/v1", UID: "u"}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}}}}}}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func reqs(cpu, mem string) Requests {
	c, m := resource.MustParse(cpu), resource.MustParse(mem)
	return Requests{CPU: c.MilliValue(), Memory: m.Value()}
}

var (
	small  = Template{Labels: map[string]string{"pool": "small", "topology.kubernetes.io/zone": "a"}, Allocatable: reqs("1", "2Gi")}
	medium = Template{Labels: map[string]string{"pool": "medium"}, Allocatable: reqs("2", "4Gi")}
	gpu    = Template{Labels: map[string]string{"pool": "gpu"}, Allocatable: reqs("4", "8Gi"),
		Taints: []corev1.Taint{{Key: "gpu", Value: "yes", Effect: corev1.TaintEffectNoSchedule}}}
)

func TestSchedulable(t *testing.T) {
	tolerate := func(p *corev1.Pod) {
		p.Spec.Tolerations = []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpEqual, Value: "yes", Effect: corev1.TaintEffectNoSchedule}}
	}
	selector := func(k, v string) func(*corev1.Pod) {
		return func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{k: v} }
	}
	affinity := func(op corev1.NodeSelectorOperator, key string, values ...string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: key, Operator: op, Values: values}}}}}}}
		}
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		t    Template
		want bool
		why  string
	}{
		{"plain pod, plain node", pod("a", "100m", "1Mi"), small, true, ""},
		{"taint not tolerated", pod("a", "100m", "1Mi"), gpu, false, "does not tolerate the taint gpu=yes:NoSchedule"},
		{"taint tolerated", pod("a", "100m", "1Mi", tolerate), gpu, true, ""},
		{"nodeSelector matches", pod("a", "100m", "1Mi", selector("pool", "small")), small, true, ""},
		{"nodeSelector does not match", pod("a", "100m", "1Mi", selector("pool", "medium")), small, false, "nodeSelector pool=medium"},
		{"affinity In zone", pod("a", "100m", "1Mi", affinity(corev1.NodeSelectorOpIn, "topology.kubernetes.io/zone", "a", "b")), small, true, ""},
		{"affinity NotIn zone", pod("a", "100m", "1Mi", affinity(corev1.NodeSelectorOpNotIn, "topology.kubernetes.io/zone", "a")), small, false, "required node affinity"},
		{"affinity DoesNotExist", pod("a", "100m", "1Mi", affinity(corev1.NodeSelectorOpDoesNotExist, "pool")), medium, false, "required node affinity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := Schedulable(tt.pod, tt.t)
			if ok != tt.want || !strings.Contains(why, tt.why) {
				t.Errorf("Schedulable = %v, %q; want %v, %q", ok, why, tt.want, tt.why)
			}
		})
	}
}

func TestScaleUp(t *testing.T) {
	pods := func(n int, cpu, mem string) []*corev1.Pod {
		var out []*corev1.Pod
		for i := range n {
			out = append(out, pod(fmt.Sprintf("p%d", i), cpu, mem))
		}
		return out
	}
	tests := []struct {
		name        string
		pending     []*corev1.Pod
		groups      []Group
		want        map[string]int
		unplaceable string
		existing    []Node
	}{
		{"5 pods of 400m on 1-CPU nodes: 3 nodes", pods(5, "400m", "100Mi"),
			[]Group{{Name: "small", Template: small, Room: 10}}, map[string]int{"small": 3}, "", nil},
		{"DaemonSet overhead counts", pods(4, "400m", "100Mi"),
			[]Group{{Name: "small", Template: small, Overhead: reqs("300m", "0"), Room: 10}}, map[string]int{"small": 4}, "", nil},
		{"capped by the pool's room", pods(5, "400m", "100Mi"),
			[]Group{{Name: "small", Template: small, Room: 1}}, map[string]int{"small": 1}, "at its maximum", nil},
		{"least waste: 3 pods of 600m waste less on one medium node than on 3 small ones", pods(3, "600m", "100Mi"),
			[]Group{{Name: "small", Template: small, Room: 10}, {Name: "medium", Template: medium, Room: 10}}, map[string]int{"medium": 1}, "", nil},
		{"least waste: a pod of 900m wastes less on a small node than on a medium one", pods(1, "900m", "1800Mi"),
			[]Group{{Name: "medium", Template: medium, Room: 10}, {Name: "small", Template: small, Room: 10}}, map[string]int{"small": 1}, "", nil},
		{"least waste: 2 pods of 1200m fit only medium nodes", pods(2, "1200m", "100Mi"),
			[]Group{{Name: "small", Template: small, Room: 10}, {Name: "medium", Template: medium, Room: 10}}, map[string]int{"medium": 2}, "", nil},
		{"too big for every pool", pods(1, "3", "100Mi"),
			[]Group{{Name: "small", Template: small, Room: 10}, {Name: "medium", Template: medium, Room: 10}}, map[string]int{},
			"requests cpu 3, memory 100Mi, more than a node offers", nil},
		{"taint: only the pool it tolerates", []*corev1.Pod{pod("p", "100m", "1Mi")},
			[]Group{{Name: "gpu", Template: gpu, Room: 10}}, map[string]int{}, "does not tolerate the taint", nil},
		{"no pool may grow", pods(1, "100m", "1Mi"), nil, map[string]int{}, "no pool can grow", nil},
		{"nodes on their way take pods first", pods(5, "400m", "100Mi"),
			[]Group{{Name: "small", Template: small, Room: 10, Upcoming: 2}}, map[string]int{"small": 1}, "", nil},
		{"a new cluster's pods wait for its first nodes", pods(2, "100m", "100Mi"),
			[]Group{{Name: "small", Template: small, Room: 2, Upcoming: 1}}, map[string]int{}, "", nil},
		{"pods that fit an existing node need nothing new", pods(3, "300m", "100Mi"),
			[]Group{{Name: "small", Template: small, Room: 5}}, map[string]int{"small": 1}, "",
			[]Node{{Name: "n1", Template: small, Ready: true, Pods: []*corev1.Pod{pod("x", "300m", "100Mi")}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := ScaleUp(tt.pending, tt.groups, tt.existing)
			if fmt.Sprint(plan.Add) != fmt.Sprint(tt.want) {
				t.Errorf("Add = %v, want %v", plan.Add, tt.want)
			}
			if tt.unplaceable == "" && len(plan.Unplaceable) > 0 {
				t.Errorf("unplaceable: %v", plan.Unplaceable)
			}
			if tt.unplaceable != "" && !strings.Contains(fmt.Sprint(plan.Unplaceable), tt.unplaceable) {
				t.Errorf("unplaceable = %v, want a reason containing %q", plan.Unplaceable, tt.unplaceable)
			}
		})
	}
}

func TestScaleDown(t *testing.T) {
	node := func(name string, ps ...*corev1.Pod) Node {
		return Node{Name: name, Template: small, Pods: ps, Ready: true}
	}
	daemon := pod("ds", "300m", "100Mi", func(p *corev1.Pod) { p.OwnerReferences[0].Kind = "DaemonSet" })
	bare := pod("bare", "100m", "10Mi", func(p *corev1.Pod) { p.OwnerReferences = nil })
	local := pod("cache", "100m", "10Mi", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	})
	localSafe := pod("cache2", "100m", "10Mi", func(p *corev1.Pod) {
		p.Spec.Volumes = local.Spec.Volumes
		p.Annotations = map[string]string{SafeToEvictAnnotation: "true"}
	})
	pinned := pod("pinned", "100m", "10Mi", func(p *corev1.Pod) { p.Annotations = map[string]string{SafeToEvictAnnotation: "false"} })

	if u := Utilization(node("n", pod("a", "250m", "100Mi"), daemon)); u != 0.25 {
		t.Errorf("Utilization = %v, want 0.25 (DaemonSet pods do not count)", u)
	}
	if u := Utilization(node("n", pod("a", "100m", "1Gi"))); u != 0.5 {
		t.Errorf("Utilization = %v, want 0.5 (memory is the larger share)", u)
	}

	roomy := node("other", pod("x", "200m", "100Mi"))
	full := node("full", pod("y", "900m", "100Mi"))
	tests := []struct {
		name   string
		n      Node
		others []Node
		want   bool
		why    string
	}{
		{"empty node", node("n", daemon), []Node{full}, true, ""},
		{"pods fit elsewhere", node("n", pod("a", "300m", "100Mi"), daemon), []Node{full, roomy}, true, ""},
		{"pods fit nowhere", node("n", pod("a", "300m", "100Mi")), []Node{full}, false, "fits on no other node"},
		{"a bare pod", node("n", bare), []Node{roomy}, false, "no controller"},
		{"node-local data", node("n", local), []Node{roomy}, false, "keeps data on the node (volume scratch)"},
		{"node-local data marked safe", node("n", localSafe), []Node{roomy}, true, ""},
		{"safe-to-evict=false", node("n", pinned), []Node{roomy}, false, "safe-to-evict=false"},
		{"not onto a node that is not Ready", node("n", pod("a", "300m", "100Mi")), []Node{{Name: "down", Template: small}}, false, "fits on no other node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := Removable(tt.n, tt.others)
			if ok != tt.want || !strings.Contains(why, tt.why) {
				t.Errorf("Removable = %v, %q; want %v, %q", ok, why, tt.want, tt.why)
			}
		})
	}
}

func TestPodRequests(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	container := func(name, cpu, mem string) corev1.Container {
		return corev1.Container{Name: name, Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}}}
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		want Requests
	}{
		{"containers only", pod("p", "100m", "64Mi"), reqs("100m", "64Mi")},
		{"a larger init container wins", pod("p", "100m", "64Mi", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{container("init", "500m", "32Mi")}
		}), reqs("500m", "64Mi")},
		{"a sidecar adds to the containers", pod("p", "100m", "64Mi", func(p *corev1.Pod) {
			side := container("side", "50m", "16Mi")
			side.RestartPolicy = &always
			p.Spec.InitContainers = []corev1.Container{side}
		}), reqs("150m", "80Mi")},
		{"overhead is added", pod("p", "100m", "64Mi", func(p *corev1.Pod) {
			p.Spec.Overhead = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}
		}), reqs("110m", "64Mi")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PodRequests(tt.pod); got != tt.want {
				t.Errorf("PodRequests = %+v, want %+v", got, tt.want)
			}
		})
	}
}
