package e2e

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// BenchmarkPendingPodToNode measures, on a pool of small machines (1 CPU)
// between 1 and 2, the seconds from creating a pod that fits no existing
// node (900m CPU) to a new node being Ready, and to the pod running; then
// the pool shrinks back (scaleDownUnneededTime 20s) before the next round.
// Run with -benchtime 3x for the median of 3:
//
//	make build && LOTSE_BINARY=$PWD/bin/lotse LOTSE_E2E_STATE_DIR=/tmp/lotse-bench \
//	  go test -count=1 -timeout 60m -run '^$' -bench PendingPodToNode -benchtime 3x ./test/e2e/
func BenchmarkPendingPodToNode(b *testing.B) {
	const name = "bench-autoscale"
	mc := mgmtClient(b)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "auto", Minimum: 1, Maximum: 2, MaxSurge: 1, MachineClass: "small",
		Autoscaler: lotsev1.PoolAutoscaler{ScaleDownUnneededTime: "20s"}}}
	if err := mc.Create(ctx, c); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { deleteAndWait(b, mc, c) })
	waitClusterReady(b, mc, name, 15*time.Minute)
	cs := tenantClient(b, name)
	var toNode, toRunning []float64
	for i := 0; i < b.N; i++ {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("big-%d", i), Namespace: "default", Labels: map[string]string{"app": "big"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "echo", Image: echoImage, ImagePullPolicy: corev1.PullNever,
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("900m")}}}}}}
		// A bare pod would keep its node; it is a one-off measurement, so
		// it may go.
		p.Annotations = map[string]string{"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}
		start := time.Now()
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		var nodeAt time.Duration
		waitFor(b, 3*time.Minute, "a new node and the pod running", func() (bool, error) {
			if nodeAt == 0 && readyNodes(cs) == 2 {
				nodeAt = time.Since(start)
			}
			cur, err := cs.CoreV1().Pods("default").Get(ctx, p.Name, metav1.GetOptions{})
			return err == nil && cur.Status.Phase == corev1.PodRunning && nodeAt > 0, err
		})
		toNode = append(toNode, nodeAt.Seconds())
		toRunning = append(toRunning, time.Since(start).Seconds())
		b.StopTimer()
		if err := cs.CoreV1().Pods("default").Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
		waitFor(b, 4*time.Minute, "the pool back at one machine", func() (bool, error) {
			return liveMachineCount(b, mc, name) == 1 && readyNodes(cs) == 1, nil
		})
		b.StartTimer()
	}
	b.ReportMetric(median(toNode), "s-median-to-node")
	b.ReportMetric(median(toRunning), "s-median-to-running")
	b.Logf("pending pod -> new node Ready: %v s; -> pod running: %v s", toNode, toRunning)
}

// BenchmarkMachineRepair measures the seconds from freezing a node's
// kubelet (SIGSTOP: the machine looks alive, the node goes silent) to a
// replacement node being Ready, with nodeNotReadyTimeout 30s. The figure
// includes the controller-manager's 50 s grace period before the node is
// marked Unknown.
//
//	make build && LOTSE_BINARY=$PWD/bin/lotse LOTSE_E2E_STATE_DIR=/tmp/lotse-bench \
//	  go test -count=1 -timeout 60m -run '^$' -bench MachineRepair -benchtime 1x ./test/e2e/
func BenchmarkMachineRepair(b *testing.B) {
	const name = "bench-repair"
	mc := mgmtClient(b)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 2, Maximum: 2, MaxSurge: 1,
		HealthCheck: lotsev1.MachineHealthCheck{NodeNotReadyTimeout: "30s", MaxUnhealthy: "50%"}}}
	if err := mc.Create(ctx, c); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { deleteAndWait(b, mc, c) })
	cl := waitClusterReady(b, mc, name, 15*time.Minute)
	cs := tenantClient(b, name)
	var samples []float64
	for i := 0; i < b.N; i++ {
		victim := listMachines(b, mc, name)[0]
		pids := pidsInNetns(machineNSOf(b, cl, victim.Status.Addresses[0].Address), "kubelet")
		if len(pids) != 1 {
			b.Fatalf("kubelet pids %v", pids)
		}
		start := time.Now()
		if err := syscall.Kill(pids[0], syscall.SIGSTOP); err != nil {
			b.Fatal(err)
		}
		waitFor(b, 6*time.Minute, "a replacement Ready", func() (bool, error) {
			for _, m := range listMachines(b, mc, name) {
				if m.Name == victim.Name {
					return false, nil
				}
			}
			return readyNodes(cs) == 2 && liveMachineCount(b, mc, name) == 2, nil
		})
		samples = append(samples, time.Since(start).Seconds())
		waitClusterReady(b, mc, name, 5*time.Minute)
	}
	b.ReportMetric(median(samples), "s-to-replacement")
	b.Logf("frozen kubelet -> replacement node Ready (timeout 30 s + 50 s grace): %v s", samples)
}
