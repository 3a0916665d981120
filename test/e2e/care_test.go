package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/care"
)

// alertSink is the Alertmanager webhook receiver the shared lotse posts to.
type alertSink struct {
	url      string
	mu       sync.Mutex
	payloads []care.WebhookPayload
}

func (s *alertSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var p care.WebhookPayload
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.payloads = append(s.payloads, p)
	s.mu.Unlock()
}

// received returns the alerts received for a cluster with a status
// ("firing", "resolved"), in order.
func (s *alertSink) received(cluster, status string) []map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]string
	for _, p := range s.payloads {
		for _, a := range p.Alerts {
			if a.Labels["cluster"] == cluster && a.Status == status {
				out = append(out, a.Labels)
			}
		}
	}
	return out
}

func scrapeMetrics(t testing.TB) string {
	t.Helper()
	resp, err := http.Get("http://" + env.metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// TestCare: an API server that stops answering (SIGSTOP: the process is
// there, so the supervisor sees nothing) turns the cluster's conditions
// False within one care interval, raises an alert at the webhook receiver
// after the threshold and is restarted by the care controller; the alert
// is resolved once the cluster is healthy again. /metrics shows the
// conditions, the alert and the restart.
func TestCare(t *testing.T) {
	const name = "cared"
	parallel(t)
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, name)
	waitClusterReady(t, mc, name, 10*time.Minute)

	var pid int
	for _, p := range clusterProcesses(name) {
		if componentOf(p.Name) == "kube-apiserver" {
			pid = p.PID
		}
	}
	if pid == 0 {
		t.Fatal("no kube-apiserver process")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })

	waitFor(t, time.Minute, "APIServerAvailable False after the freeze", func() (bool, error) {
		for _, cond := range getCluster(t, mc, name).Status.Conditions {
			if cond.Type == lotsev1.ConditionAPIServerAvailable && cond.Status == metav1.ConditionFalse && cond.LastTransitionTime.After(frozen.Add(-time.Second)) {
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("APIServerAvailable False %s after the freeze", time.Since(frozen).Round(time.Second))
	waitFor(t, 2*time.Minute, "a firing alert at the receiver", func() (bool, error) {
		for _, l := range env.alerts.received(name, "firing") {
			if l["alertname"] == care.AlertConditionFalse && l["condition"] == lotsev1.ConditionAPIServerAvailable {
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("alert received %s after the freeze", time.Since(frozen).Round(time.Second))
	m := scrapeMetrics(t)
	for _, want := range []string{
		`lotse_cluster_condition{cluster="` + name + `",condition="APIServerAvailable",namespace="default",status="False"} 1`,
		`lotse_alerts_firing{alertname="LotseClusterConditionFalse"}`,
		`lotse_cluster_api_probe_failures_total{cluster="` + name + `",namespace="default"}`,
		`lotse_cluster_info{cluster="` + name + `",ha="false",namespace="default",phase="Unhealthy"`,
		`controller_runtime_reconcile_time_seconds_count{controller="cluster"`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// The care controller restarts the hung API server (90 s in these
	// tests); the cluster recovers and the alert is resolved.
	restarted := `lotse_care_restarts_total{cluster="` + name + `",component="kube-apiserver",namespace="default"} 1`
	waitFor(t, 4*time.Minute, "the care controller's restart", func() (bool, error) {
		return strings.Contains(scrapeMetrics(t), restarted), nil
	})
	t.Logf("restarted %s after the freeze", time.Since(frozen).Round(time.Second))
	waitClusterEvent(t, name, "ComponentRestarted", "kube-apiserver")
	waitFor(t, 3*time.Minute, "the resolved alert", func() (bool, error) {
		return len(env.alerts.received(name, "resolved")) > 0, nil
	})
	waitClusterReady(t, mc, name, 2*time.Minute)
	ns, err := tenantClient(t, name).CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
	if err != nil || ns.Status.Phase != corev1.NamespaceActive {
		t.Errorf("the restarted API server: %v", err)
	}
}
