package e2e

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// BenchmarkHibernation measures, on a cluster with one node, the seconds
// from `lotse cluster hibernate` to the phase Hibernated, from `lotse
// cluster wake` to the cluster's Ready, and the resident memory of the
// cluster's processes before and while it sleeps.
//
//	make build && LOTSE_BINARY=$PWD/bin/lotse LOTSE_E2E_STATE_DIR=/tmp/lotse-bench \
//	  go test -count=1 -timeout 60m -run '^$' -bench Hibernation -benchtime 3x ./test/e2e/
func BenchmarkHibernation(b *testing.B) {
	const name = "bench-sleep"
	mc := mgmtClient(b)
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
	if err := mc.Create(context.Background(), c); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { deleteAndWait(b, mc, c) })
	waitClusterReady(b, mc, name, 15*time.Minute)
	rss := func() float64 {
		var sum float64
		for _, p := range clusterProcesses(name) {
			sum += rssMiB(p)
		}
		return sum
	}
	awake := rss()
	var sleep, wake []float64
	var asleep float64
	for i := 0; i < b.N; i++ {
		start := time.Now()
		mustCLI(b, "cluster", "hibernate", name)
		waitFor(b, 5*time.Minute, name+" Hibernated", func() (bool, error) {
			return getCluster(b, mc, name).Status.Phase == lotsev1.PhaseHibernated, nil
		})
		sleep = append(sleep, time.Since(start).Seconds())
		asleep = max(asleep, rss())
		start = time.Now()
		mustCLI(b, "cluster", "wake", name)
		waitClusterReady(b, mc, name, 5*time.Minute)
		wake = append(wake, time.Since(start).Seconds())
	}
	b.ReportMetric(median(sleep), "s-to-hibernated")
	b.ReportMetric(median(wake), "s-to-ready-after-wake")
	b.ReportMetric(asleep, "MiB-asleep")
	b.Logf("hibernate: %v s; wake: %v s; RSS of the cluster's processes awake %.0f MiB, asleep %.0f MiB", sleep, wake, awake, asleep)
}
