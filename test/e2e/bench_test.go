package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/supervisor"
)

// benchVariants are the control-plane shapes the benchmarks measure.
var benchVariants = []struct {
	name  string
	shape func(*lotsev1.Cluster)
}{
	{"single", func(*lotsev1.Cluster) {}},
	{"ha", func(c *lotsev1.Cluster) { c.Spec.ControlPlane.HighAvailability = true }},
	// On the shared datastore: no etcd of the cluster's own (the first
	// cluster also starts the datastore; medians leave that out).
	{"shared", func(c *lotsev1.Cluster) { c.Spec.ControlPlane.Datastore = lotsev1.DatastoreShared }},
}

// BenchmarkCreateToAPIServerAvailable measures the seconds from creating a
// Cluster object to its APIServerAvailable condition turning true, as a
// client watching the status sees it. Run with -benchtime 5x for the median of 5:
//
//	make bench    (or: LOTSE_BINARY=bin/lotse go test -run '^$' -bench CreateToAPIServer -benchtime 5x ./test/e2e/)
func BenchmarkCreateToAPIServerAvailable(b *testing.B) {
	for _, variant := range benchVariants {
		name := variant.name
		b.Run(name, func(b *testing.B) {
			mc := mgmtClient(b)
			var samples []float64
			for i := 0; i < b.N; i++ {
				cl := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%s-%d", name, i), Namespace: "default"}}
				variant.shape(cl)
				start := time.Now()
				if err := mc.Create(context.Background(), cl); err != nil {
					b.Fatal(err)
				}
				waitFor(b, 3*time.Minute, "APIServerAvailable", func() (bool, error) {
					cur := &lotsev1.Cluster{}
					if err := mc.Get(context.Background(), client.ObjectKeyFromObject(cl), cur); err != nil {
						return false, err
					}
					return meta.IsStatusConditionTrue(cur.Status.Conditions, lotsev1.ConditionAPIServerAvailable), nil
				})
				samples = append(samples, time.Since(start).Seconds())
				b.StopTimer()
				deleteAndWait(b, mc, cl)
				b.StartTimer()
			}
			b.ReportMetric(median(samples), "s-median")
			b.ReportMetric(maxOf(samples), "s-max")
			b.Logf("%s: seconds to APIServerAvailable: %v", name, samples)
		})
	}
}

// BenchmarkIdleRSS reports the resident memory of each control-plane
// process after the cluster has been Ready and idle for 30 seconds.
func BenchmarkIdleRSS(b *testing.B) {
	for _, variant := range benchVariants {
		name := variant.name
		b.Run(name, func(b *testing.B) {
			mc := mgmtClient(b)
			for i := 0; i < b.N; i++ {
				cl := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("rss-%s-%d", name, i), Namespace: "default"}}
				variant.shape(cl)
				if err := mc.Create(context.Background(), cl); err != nil {
					b.Fatal(err)
				}
				waitClusterReady(b, mc, cl.Name, 3*time.Minute)
				time.Sleep(30 * time.Second)
				byComponent, pssByComponent := map[string][]float64{}, map[string][]float64{}
				for _, p := range clusterProcesses(cl.Name) {
					byComponent[componentOf(p.Name)] = append(byComponent[componentOf(p.Name)], rssMiB(p))
					pssByComponent[componentOf(p.Name)] = append(pssByComponent[componentOf(p.Name)], pssMiB(p))
				}
				if cl.Spec.ControlPlane.Datastore == lotsev1.DatastoreShared {
					// Not the cluster's: every cluster on it shares it.
					for _, p := range supervisor.FindProcesses(env.owner) {
						if strings.HasPrefix(p.Name, process.SharedDatastoreKey+"/") {
							b.ReportMetric(rssMiB(p), "MiB-shared-etcd")
							b.Logf("shared datastore etcd RSS MiB: %.0f, PSS MiB: %.0f", rssMiB(p), pssMiB(p))
						}
					}
				}
				for comp, v := range byComponent {
					b.ReportMetric(maxOf(v), "MiB-"+comp)
					// PSS shares the pages of a binary among the processes
					// that map it (the management plane's, other clusters'):
					// what one more cluster really costs.
					b.ReportMetric(maxOf(pssByComponent[comp]), "MiB-pss-"+comp)
					b.Logf("%s %s RSS MiB: %v, PSS MiB: %v", name, comp, v, pssByComponent[comp])
				}
				deleteAndWait(b, mc, cl)
			}
		})
	}
}

func deleteAndWait(b testing.TB, mc client.Client, cl *lotsev1.Cluster) {
	if err := mc.Delete(context.Background(), cl); err != nil {
		b.Fatal(err)
	}
	waitFor(b, 2*time.Minute, "cluster deleted", func() (bool, error) {
		err := mc.Get(context.Background(), client.ObjectKeyFromObject(cl), &lotsev1.Cluster{})
		return apierrors.IsNotFound(err), nil
	})
}

// rssMiB reads VmRSS of a process.
func rssMiB(p supervisor.Found) float64 {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.PID), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// pssMiB reads the proportional set size of a process: its private
// memory plus its share of pages mapped by several processes.
func pssMiB(p supervisor.Found) float64 {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.PID), "smaps_rollup"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func maxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// BenchmarkClusterWithNodes measures the seconds from creating a Cluster
// with one pool of 3 machines to 3 Ready nodes and CoreDNS available, and
// to the cluster's Ready condition (every addon available). It also reports how long one more node takes to join
// (scaling the pool 3 -> 4) and each node's resident memory.
//
//	LOTSE_BINARY=bin/lotse go test -run '^$' -bench ClusterWithNodes -benchtime 5x ./test/e2e/
func BenchmarkClusterWithNodes(b *testing.B) {
	mc := mgmtClient(b)
	ctx := context.Background()
	var toReady, toNodesAndDNS, toJoin []float64
	perNode := map[string][]float64{}
	for i := 0; i < b.N; i++ {
		cl := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-nodes-%d", i), Namespace: "default"}}
		cl.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 3, Maximum: 4, MaxSurge: 1}}
		start := time.Now()
		if err := mc.Create(ctx, cl); err != nil {
			b.Fatal(err)
		}
		// Nodes and CoreDNS, from the tenant, while the cluster becomes
		// Ready (which also waits for every other addon).
		var nodesAndDNS time.Duration
		var cs kubernetes.Interface
		waitFor(b, 15*time.Minute, "cluster "+cl.Name+" Ready", func() (bool, error) {
			if cs == nil {
				if _, err := os.Stat(filepath.Join(clusterDir(cl.Name), "pki", "admin.kubeconfig")); err == nil {
					cs = tenantClient(b, cl.Name)
				}
			}
			if nodesAndDNS == 0 && cs != nil && readyNodes(cs) == 3 {
				if d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{}); err == nil && d.Status.AvailableReplicas > 0 {
					nodesAndDNS = time.Since(start)
				}
			}
			got := &lotsev1.Cluster{}
			if err := mc.Get(ctx, client.ObjectKeyFromObject(cl), got); err != nil {
				return false, err
			}
			return nodesAndDNS > 0 && got.Status.ObservedGeneration == got.Generation && meta.IsStatusConditionTrue(got.Status.Conditions, lotsev1.ConditionReady), nil
		})
		toReady = append(toReady, time.Since(start).Seconds())
		toNodesAndDNS = append(toNodesAndDNS, nodesAndDNS.Seconds())

		b.StopTimer()
		updateCluster(b, mc, cl.Name, func(c *lotsev1.Cluster) { c.Spec.Workers[0].Minimum = 4 })
		joinStart := time.Now()
		waitFor(b, 5*time.Minute, "the fourth node Ready", func() (bool, error) {
			ms := &lotsev1.MachineList{}
			if err := mc.List(ctx, ms, client.InNamespace("default"), client.MatchingLabels{lotsev1.LabelCluster: cl.Name}); err != nil {
				return false, err
			}
			ready := 0
			for _, m := range ms.Items {
				if meta.IsStatusConditionTrue(m.Status.Conditions, "NodeReady") {
					ready++
				}
			}
			return ready == 4, nil
		})
		toJoin = append(toJoin, time.Since(joinStart).Seconds())
		if i == 0 {
			time.Sleep(30 * time.Second) // idle, for the memory figures
			for _, p := range clusterProcesses(cl.Name) {
				if strings.Contains(p.Name, "/machines/") {
					perNode[componentOf(p.Name)] = append(perNode[componentOf(p.Name)], rssMiB(p))
				}
			}
		}
		deleteAndWait(b, mc, cl)
		b.StartTimer()
	}
	b.ReportMetric(median(toReady), "s-ready-median")
	b.ReportMetric(median(toNodesAndDNS), "s-nodes-dns-median")
	b.ReportMetric(median(toJoin), "s-join-median")
	b.Logf("seconds to 3 nodes Ready and CoreDNS available: %v", toNodesAndDNS)
	b.Logf("seconds to the cluster's Ready (every addon available): %v", toReady)
	b.Logf("seconds for one node to join: %v", toJoin)
	for comp, v := range perNode {
		b.ReportMetric(maxOf(v), "MiB-"+comp)
		b.Logf("per node %s RSS MiB: %v", comp, v)
	}
}
