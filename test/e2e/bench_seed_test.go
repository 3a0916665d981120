package e2e

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// BenchmarkSeed creates a seed (a Lotse cluster with one node) and
// LOTSE_SEED_CLUSTERS (default 5) workerless clusters on it, one after the
// other. It reports create -> API ready on the seed backend (to
// APIServerAvailable; the median and the slowest) and the memory a control
// plane takes on the seed node: the working set of its pods (etcd, API
// server with its tunnel server, controller-manager, scheduler) from the
// seed's metrics API after a minute of idling, and how many control
// planes the node's allocatable memory holds at that rate.
//
//	LOTSE_BINARY=bin/lotse go test -count=1 -timeout 60m -run '^$' -bench 'Seed' -benchtime 1x ./test/e2e/
func BenchmarkSeed(b *testing.B) {
	want := 5
	if v := os.Getenv("LOTSE_SEED_CLUSTERS"); v != "" {
		var err error
		if want, err = strconv.Atoi(v); err != nil || want < 1 {
			b.Fatalf("LOTSE_SEED_CLUSTERS=%q: want a number of clusters", v)
		}
	}
	for range b.N {
		seedBenchRun(b, want)
	}
}

func seedBenchRun(b *testing.B, want int) {
	mc := mgmtClient(b)
	ctx := context.Background()
	const host = "bench-seed-host"
	seedCluster := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: host, Namespace: "default"}}
	seedCluster.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
	if err := mc.Create(ctx, seedCluster); err != nil {
		b.Fatal(err)
	}
	var made []*lotsev1.Cluster
	b.Cleanup(func() {
		for _, cl := range made {
			_ = mc.Delete(ctx, cl)
		}
		for _, cl := range made {
			waitFor(b, 5*time.Minute, "cluster "+cl.Name+" deleted", func() (bool, error) {
				err := mc.Get(ctx, client.ObjectKeyFromObject(cl), &lotsev1.Cluster{})
				return client.IgnoreNotFound(err) == nil && err != nil, nil
			})
		}
		_ = mc.Delete(ctx, &lotsev1.Seed{ObjectMeta: metav1.ObjectMeta{Name: "bench"}})
		_, _ = lotseCLI(b, "cluster", "delete", host, "--wait", "--timeout", "5m")
	})
	waitClusterReady(b, mc, host, 15*time.Minute)
	mustCLI(b, "seed", "add", "bench", "--cluster", host, "--capacity", strconv.Itoa(want))
	waitFor(b, 2*time.Minute, "seed bench Ready", func() (bool, error) {
		s := &lotsev1.Seed{}
		err := mc.Get(ctx, client.ObjectKey{Name: "bench"}, s)
		return err == nil && meta.IsStatusConditionTrue(s.Status.Conditions, lotsev1.ConditionSeedReady), err
	})

	var samples []float64
	for i := 0; i < want; i++ {
		cl := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("bench-seeded-%02d", i)}}
		cl.Spec.ControlPlane.SeedSelector = &metav1.LabelSelector{}
		start := time.Now()
		if err := mc.Create(ctx, cl); err != nil {
			b.Fatal(err)
		}
		made = append(made, cl)
		waitFor(b, 10*time.Minute, cl.Name+" APIServerAvailable", func() (bool, error) {
			cur := &lotsev1.Cluster{}
			if err := mc.Get(ctx, client.ObjectKeyFromObject(cl), cur); err != nil {
				return false, err
			}
			return meta.IsStatusConditionTrue(cur.Status.Conditions, lotsev1.ConditionAPIServerAvailable), nil
		})
		samples = append(samples, time.Since(start).Seconds())
		b.Logf("%s: API ready after %.1f s", cl.Name, samples[len(samples)-1])
	}
	sorted := append([]float64(nil), samples...)
	sort.Float64s(sorted)

	// A minute of idling, then what the metrics API says.
	time.Sleep(time.Minute)
	seedCS := clusterClientset(b, host)
	kubeconfig := b.TempDir() + "/seed"
	mustCLI(b, "cluster", "kubeconfig", host, "--output-file", kubeconfig)
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(cfg)
	podMetrics := schema.GroupVersionResource{Group: "metrics.k8s.io", Version: "v1beta1", Resource: "pods"}
	var total float64
	for _, cl := range made {
		ns := seedNamespace(b, cl.Name)
		var mib float64
		waitFor(b, 3*time.Minute, "metrics of "+ns, func() (bool, error) {
			list, err := dyn.Resource(podMetrics).Namespace(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err
			}
			mib = 0
			for _, item := range list.Items {
				containers, _, _ := unstructured.NestedSlice(item.Object, "containers")
				for _, c := range containers {
					usage, _ := c.(map[string]any)["usage"].(map[string]any)
					if q, err := resource.ParseQuantity(fmt.Sprint(usage["memory"])); err == nil {
						mib += float64(q.Value()) / (1 << 20)
					}
				}
			}
			return len(list.Items) >= 4, fmt.Errorf("%d pods with metrics", len(list.Items))
		})
		total += mib
	}
	perCP := total / float64(len(made))
	nodes, err := seedCS.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		b.Fatalf("seed nodes: %v (%d)", err, len(nodes.Items))
	}
	allocatable := float64(nodes.Items[0].Status.Allocatable.Memory().Value()) / (1 << 20)
	b.ReportMetric(sorted[len(sorted)/2], "s-create-to-api-median")
	b.ReportMetric(sorted[len(sorted)-1], "s-create-to-api-max")
	b.ReportMetric(perCP, "MiB-per-control-plane")
	b.ReportMetric(allocatable/perCP, "control-planes-per-node")
}
