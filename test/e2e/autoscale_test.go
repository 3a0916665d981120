package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// TestAutoscaling: a pool of small machines (1 CPU, 2 GiB) between 1 and 4
// grows when pods are unschedulable, to as many nodes as they need (no
// idle one), and shrinks back to its minimum once they are gone and the
// nodes have been unneeded for the pool's scaleDownUnneededTime.
func TestAutoscaling(t *testing.T) {
	const name = "autoscale"
	parallel(t)
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "auto", Minimum: 1, Maximum: 4, MaxSurge: 1, MachineClass: "small",
		Autoscaler: lotsev1.PoolAutoscaler{ScaleDownUnneededTime: "20s", ScaleDownUtilizationThreshold: 50}}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, name)
	cl := waitClusterReady(t, mc, name, 15*time.Minute)
	cs := tenantClient(t, name)

	// The class shapes the node: allocatable and the machine's cgroup.
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v (%v), want 1", nodes, err)
	}
	alloc := nodes.Items[0].Status.Allocatable
	if alloc.Cpu().MilliValue() != 1000 || alloc.Memory().Value() != 2<<30 {
		t.Errorf("allocatable of a small node: cpu %s, memory %s; want 1 and 2Gi", alloc.Cpu(), alloc.Memory())
	}
	if got := nodes.Items[0].Labels["node.kubernetes.io/instance-type"]; got != "small" {
		t.Errorf("instance type label %q, want small", got)
	}
	m := listMachines(t, mc, name)[0]
	cg := machineCgroup(t, cl, m)
	if quota := readTrim(t, "/sys/fs/cgroup/cpu"+cg+"/cpu.cfs_quota_us"); quota != "100000" {
		t.Errorf("cpu quota of a small machine: %s, want 100000 (one CPU)", quota)
	}
	if limit := readTrim(t, "/sys/fs/cgroup/memory"+cg+"/memory.limit_in_bytes"); limit != fmt.Sprint(2<<30+512<<20) {
		t.Errorf("memory limit of a small machine: %s, want 2 GiB + 512 MiB for its agents", limit)
	}

	// 5 pods of 400m: they do not fit one node.
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "load", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](5), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "load"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "load"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "echo", Image: echoImage, ImagePullPolicy: corev1.PullNever,
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("400m"), corev1.ResourceMemory: resource.MustParse("64Mi")}}}}}}}}
	start := time.Now()
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var firstNewNode time.Duration
	waitFor(t, 5*time.Minute, "all 5 load pods running", func() (bool, error) {
		if firstNewNode == 0 && readyNodes(cs) > 1 {
			firstNewNode = time.Since(start)
		}
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=load"})
		if err != nil {
			return false, err
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == 5, fmt.Errorf("%d of 5 running", running)
	})
	t.Logf("pods created -> first new node Ready: %s; all 5 running after %s", firstNewNode.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	machines := liveMachineCount(t, mc, name)
	if machines < 2 || machines > 4 {
		t.Errorf("%d machines for 5 pods of 400m on 1-CPU nodes", machines)
	}
	// No node was added for nothing: every node but the first runs a load pod.
	pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=load"})
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, p := range pods.Items {
		used[p.Spec.NodeName] = true
	}
	nodes, _ = cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	for _, n := range nodes.Items {
		if n.Name != m.Name && !used[n.Name] {
			t.Errorf("node %s was added but runs no load pod", n.Name)
		}
	}
	waitClusterEvent(t, name, "ScaleUp", "pool auto: 1 ->")
	if cl := getCluster(t, mc, name); len(cl.Status.Workers) != 1 || int(cl.Status.Workers[0].Desired) != machines {
		t.Errorf("status.workers: %+v, want desired %d", cl.Status.Workers, machines)
	}

	// Without the load the new nodes are unneeded; after 20 s they go.
	if err := cs.AppsV1().Deployments("default").Delete(ctx, "load", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 4*time.Minute, "the pool back at its minimum", func() (bool, error) {
		n := liveMachineCount(t, mc, name)
		return n == 1 && readyNodes(cs) == 1, fmt.Errorf("%d machines", n)
	})
	waitClusterEvent(t, name, "ScaleDown", "pool auto:")
	waitClusterReady(t, mc, name, 2*time.Minute)
}

func liveMachineCount(t testing.TB, mc client.Client, name string) int {
	t.Helper()
	n := 0
	for _, m := range listMachines(t, mc, name) {
		if m.DeletionTimestamp.IsZero() {
			n++
		}
	}
	return n
}

func readyNodes(cs kubernetes.Interface) int {
	nodes, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return 0
	}
	n := 0
	for i := range nodes.Items {
		if nodeReady(&nodes.Items[i]) {
			n++
		}
	}
	return n
}

// machineCgroup is a local machine's cgroup path (below each hierarchy).
func machineCgroup(t testing.TB, cl *lotsev1.Cluster, m lotsev1.Machine) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(clusterDir(cl.Name), "machines", m.Name, "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func readTrim(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}
