package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/releases"
)

// BenchmarkUpgrade measures one-minor upgrades (the release before the
// default to the default). "ha": an HA control plane without nodes under a
// steady client load (reads, writes, a watch): seconds until every
// component runs the new version, and the client requests that failed
// (target 0). "single": a single-replica control plane: seconds, and the
// longest time the API did not answer (probed every 50 ms on new
// connections). "nodes": a single-replica cluster with a pool of 2
// (maxSurge 1, maxUnavailable 0): seconds per node of the roll, from the
// control plane being done to the last old machine gone.
//
//	make build && LOTSE_BINARY=$PWD/bin/lotse LOTSE_E2E_STATE_DIR=/tmp/lotse-bench \
//	  go test -count=1 -timeout 60m -run '^$' -bench Upgrade -benchtime 1x ./test/e2e/
func BenchmarkUpgrade(b *testing.B) {
	from := upgradeFrom(b)
	to := releases.Default().Version
	mc := mgmtClient(b)
	ctx := context.Background()
	create := func(b *testing.B, name string, ha bool, workers int32) {
		b.Helper()
		c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
		c.Spec.Kubernetes.Version = from
		c.Spec.ControlPlane.HighAvailability = ha
		if workers > 0 {
			c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: workers, Maximum: workers, MaxSurge: 1}}
		}
		if err := mc.Create(ctx, c); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { deleteAndWait(b, mc, c) })
		waitClusterReady(b, mc, name, 20*time.Minute)
	}
	upgraded := func(b *testing.B, name string) {
		b.Helper()
		waitFor(b, 25*time.Minute, name+" upgraded", func() (bool, error) {
			c := getCluster(b, mc, name)
			return c.Status.KubernetesVersion == to && c.Status.Upgrade == nil && c.Status.Phase == lotsev1.PhaseRunning, nil
		})
	}

	b.Run("ha", func(b *testing.B) {
		const name = "bench-up-ha"
		create(b, name, true, 0)
		load := startAPILoad(b, name, "default")
		start := time.Now()
		updateCluster(b, mc, name, func(c *lotsev1.Cluster) { c.Spec.Kubernetes.Version = to })
		upgraded(b, name)
		took := time.Since(start)
		time.Sleep(time.Second)
		load.stop()
		load.wg.Wait()
		b.ReportMetric(took.Seconds(), "s-upgrade")
		b.ReportMetric(float64(load.failed.Load()), "failed-requests")
		b.ReportMetric(float64(load.ok.Load()), "ok-requests")
		b.Logf("HA %s -> %s: %s; %d requests ok, %d failed (first: %v)", from, to, took.Round(100*time.Millisecond),
			load.ok.Load(), load.failed.Load(), load.firstFail.Load())
	})

	b.Run("single", func(b *testing.B) {
		const name = "bench-up-single"
		create(b, name, false, 0)
		cl := getCluster(b, mc, name)
		client := adminHTTPClient(b, name)
		var mu sync.Mutex
		var longest time.Duration
		pctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			lastOK := time.Now()
			for pctx.Err() == nil {
				resp, err := client.Get(cl.Status.Endpoint + "/api/v1/namespaces/default")
				if err == nil {
					resp.Body.Close()
				}
				if err == nil && resp.StatusCode == http.StatusOK {
					mu.Lock()
					longest = max(longest, time.Since(lastOK))
					mu.Unlock()
					lastOK = time.Now()
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		start := time.Now()
		updateCluster(b, mc, name, func(c *lotsev1.Cluster) { c.Spec.Kubernetes.Version = to })
		upgraded(b, name)
		took := time.Since(start)
		time.Sleep(2 * time.Second)
		stop()
		wg.Wait()
		b.ReportMetric(took.Seconds(), "s-upgrade")
		b.ReportMetric(longest.Seconds(), "s-downtime")
		b.Logf("single replica %s -> %s: %s; longest time without an answer: %s", from, to, took.Round(100*time.Millisecond), longest.Round(10*time.Millisecond))
	})

	b.Run("nodes", func(b *testing.B) {
		const name = "bench-up-nodes"
		const nodes = 2
		create(b, name, false, nodes)
		updateCluster(b, mc, name, func(c *lotsev1.Cluster) { c.Spec.Kubernetes.Version = to })
		var cpDone time.Time
		waitFor(b, 10*time.Minute, "control plane upgraded", func() (bool, error) {
			c := getCluster(b, mc, name)
			if c.Status.Upgrade == nil {
				return false, nil
			}
			for _, comp := range c.Status.Upgrade.Components {
				if comp.Name != "pool/w" && comp.Updated < comp.Total {
					return false, fmt.Errorf("%s %d/%d", comp.Name, comp.Updated, comp.Total)
				}
			}
			cpDone = time.Now()
			return true, nil
		})
		upgraded(b, name)
		roll := time.Since(cpDone)
		b.ReportMetric(roll.Seconds()/nodes, "s-per-node")
		b.Logf("roll of %d nodes (maxSurge 1, maxUnavailable 0): %s, %s per node", nodes, roll.Round(100*time.Millisecond), (roll / nodes).Round(100*time.Millisecond))
	})
}
