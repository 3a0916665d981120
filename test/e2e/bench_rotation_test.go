package e2e

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// BenchmarkRotation measures each kind's two phases on a workerless
// cluster holding 2,000 objects (200 Secrets, 1,800 ConfigMaps): seconds from `lotse
// cluster rotate NAME KIND` to Prepared (for the etcd key including the
// rewrite of every Secret) and from `--complete` to Completed.
//
//	make build && LOTSE_BINARY=$PWD/bin/lotse LOTSE_E2E_STATE_DIR=/tmp/lotse-bench \
//	  go test -count=1 -timeout 60m -run '^$' -bench Rotation -benchtime 1x ./test/e2e/
func BenchmarkRotation(b *testing.B) {
	const name = "bench-rotate"
	mc := mgmtClient(b)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	if err := mc.Create(ctx, c); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { deleteAndWait(b, mc, c) })
	waitClusterReady(b, mc, name, 10*time.Minute)
	cfg := tenantConfig(b, name)
	cfg.QPS, cfg.Burst = 2000, 2000
	fill(b, kubernetes.NewForConfigOrDie(cfg), 2000)
	figures := map[string][]float64{}
	for i := 0; i < b.N; i++ {
		for _, kind := range []string{"ca", "service-account-key", "etcd-encryption-key"} {
			start := time.Now()
			mustCLI(b, "cluster", "rotate", name, kind)
			figures[kind+"-prepare"] = append(figures[kind+"-prepare"], time.Since(start).Seconds())
			start = time.Now()
			mustCLI(b, "cluster", "rotate", name, kind, "--complete")
			figures[kind+"-complete"] = append(figures[kind+"-complete"], time.Since(start).Seconds())
		}
	}
	for k, v := range figures {
		b.ReportMetric(median(v), "s-"+k)
	}
	b.Logf("%v", figures)
}
