package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lotse/lotse/internal/supervisor"
)

// BenchmarkWebhookThroughTunnel measures admission webhook calls that go
// from the API server through the konnectivity tunnel to a pod: 200
// ConfigMap creates that the echo pod's validating and mutating webhooks
// see, against 200 creates that no webhook sees (the difference is the
// webhooks' round trips), and the resident memory the tunnel adds per
// cluster (server + agent). Run with -benchtime 1x:
//
//	LOTSE_BINARY=bin/lotse go test -run '^$' -bench WebhookThroughTunnel -benchtime 1x ./test/e2e/
func BenchmarkWebhookThroughTunnel(b *testing.B) {
	buildEchoImage(b)
	const name = "bench-tunnel"
	oneNodeCluster(b, name)
	tc := newTunnelCluster(b, name)
	tc.registerEchoWebhooks(b)
	waitFor(b, 30*time.Second, "the webhooks answering", func() (bool, error) {
		cm, err := tc.createWebhookConfigMap("warm-", false)
		return err == nil && cm.Labels["echo-mutated"] != "", err
	})
	const calls = 200
	for i := 0; i < b.N; i++ {
		with := timeCreates(b, tc, calls, true)
		without := timeCreates(b, tc, calls, false)
		b.ReportMetric(percentile(with, 50), "ms-p50-webhooks")
		b.ReportMetric(percentile(with, 99), "ms-p99-webhooks")
		b.ReportMetric(percentile(without, 50), "ms-p50-plain")
		b.ReportMetric(percentile(without, 99), "ms-p99-plain")
		b.Logf("ConfigMap create with 2 webhooks through the tunnel: p50 %.1f ms, p99 %.1f ms; without webhooks: p50 %.1f ms, p99 %.1f ms",
			percentile(with, 50), percentile(with, 99), percentile(without, 50), percentile(without, 99))
	}
	server, agent := tunnelRSS(b, name)
	b.ReportMetric(server, "MiB-server")
	b.ReportMetric(agent, "MiB-agent")
	b.Logf("tunnel memory per cluster: konnectivity-server %.1f MiB, agent %.1f MiB (one node)", server, agent)
}

// timeCreates creates n ConfigMaps one after another and returns each
// create's milliseconds.
func timeCreates(b *testing.B, tc *tunnelCluster, n int, webhooks bool) []float64 {
	out := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if webhooks {
			cm, err := tc.createWebhookConfigMap("bench-", false)
			if err != nil || cm.Labels["echo-mutated"] == "" {
				b.Fatalf("create through the webhooks: %v", err)
			}
		} else if _, err := tc.cs.CoreV1().ConfigMaps("default").Create(context.Background(), &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "plain-"}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		out = append(out, float64(time.Since(start).Microseconds())/1000)
	}
	return out
}

func percentile(v []float64, p float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// tunnelRSS returns the resident MiB of the cluster's konnectivity server
// and of its agent process (found by the tunnel endpoint port it dials).
func tunnelRSS(b *testing.B, name string) (server, agent float64) {
	for _, p := range clusterProcesses(name) {
		if strings.HasSuffix(p.Name, "/konnectivity-server-0") {
			server = rssMiB(p)
		}
	}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		data, err := os.ReadFile(f)
		if err != nil || !strings.HasPrefix(string(data), "/proxy-agent\x00") {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(f, "/proc/%d/cmdline", &pid); err == nil {
			agent = max(agent, rssMiB(supervisor.Found{PID: pid}))
		}
	}
	if server == 0 || agent == 0 {
		b.Fatalf("tunnel processes not found (server %.1f MiB, agent %.1f MiB)", server, agent)
	}
	return server, agent
}
