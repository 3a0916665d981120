package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/supervisor"
)

// BenchmarkAddonDrift measures how fast the addon keeper puts back what a
// tenant changed: 100 deletions of a managed object (CoreDNS's ConfigMap)
// and 100 edits of a field Lotse owns (its Corefile), each timed from the
// request until a watch sees the object as declared again; and the
// resident memory all addons add on a one-node cluster. Run with
// -benchtime 1x:
//
//	LOTSE_BINARY=bin/lotse go test -run '^$' -bench AddonDrift -benchtime 1x ./test/e2e/
func BenchmarkAddonDrift(b *testing.B) {
	const name = "bench-addons"
	oneNodeCluster(b, name)
	cs := tenantClient(b, name)

	const trials = 100
	for i := 0; i < b.N; i++ {
		deletes := timeRepairs(b, cs, trials, func(ctx context.Context) error {
			return cs.CoreV1().ConfigMaps("kube-system").Delete(ctx, "coredns", metav1.DeleteOptions{})
		})
		edits := timeRepairs(b, cs, trials, func(ctx context.Context) error {
			patch := []byte(`{"data":{"Corefile":".:53 {\n    errors\n}\n"}}`)
			_, err := cs.CoreV1().ConfigMaps("kube-system").Patch(ctx, "coredns", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "bench"})
			return err
		})
		b.ReportMetric(percentile(deletes, 50), "ms-p50-delete")
		b.ReportMetric(percentile(deletes, 99), "ms-p99-delete")
		b.ReportMetric(percentile(edits, 50), "ms-p50-edit")
		b.ReportMetric(percentile(edits, 99), "ms-p99-edit")
		b.Logf("restored after a delete: p50 %.1f ms, p99 %.1f ms; after an edit: p50 %.1f ms, p99 %.1f ms (%d trials each)",
			percentile(deletes, 50), percentile(deletes, 99), percentile(edits, 50), percentile(edits, 99), trials)
	}
	total, parts := addonRSS(b)
	b.ReportMetric(total, "MiB-addons")
	b.Logf("addon memory on a one-node cluster: %.1f MiB (%s)", total, parts)
}

// timeRepairs runs change n times, each time waiting for the watch to show
// CoreDNS's ConfigMap as declared again (it has the Corefile's kubernetes
// block), and returns each repair's milliseconds.
func timeRepairs(b *testing.B, cs kubernetes.Interface, n int, change func(context.Context) error) []float64 {
	ctx := context.Background()
	out := make([]float64, 0, n)
	declared := func(obj any) bool {
		cm, ok := obj.(*corev1.ConfigMap)
		return ok && strings.Contains(cm.Data["Corefile"], "kubernetes cluster.local")
	}
	for i := 0; i < n; i++ {
		cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil || !declared(cm) {
			b.Fatalf("CoreDNS ConfigMap not as declared before trial %d: %v", i, err)
		}
		w, err := cs.CoreV1().ConfigMaps("kube-system").Watch(ctx, metav1.ListOptions{
			FieldSelector: "metadata.name=coredns", ResourceVersion: cm.ResourceVersion})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := change(ctx); err != nil {
			b.Fatal(err)
		}
		changed, restored := false, false
		timeout := time.After(30 * time.Second)
		for !restored {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					b.Fatal("watch closed")
				}
				switch {
				case ev.Type == watch.Deleted || (ev.Type == watch.Modified && !declared(ev.Object)):
					changed = true
				case changed && (ev.Type == watch.Added || ev.Type == watch.Modified) && declared(ev.Object):
					restored = true
				}
			case <-timeout:
				b.Fatalf("trial %d: not restored within 30 s", i)
			}
		}
		out = append(out, float64(time.Since(start).Microseconds())/1000)
		w.Stop()
	}
	return out
}

// addonRSS sums the resident memory of the addon processes on the host
// (the benchmark's cluster is the only one running).
func addonRSS(b *testing.B) (float64, string) {
	binaries := []string{"/coredns", "/proxy-agent", "/kube-router", "/local-path-provisioner", "/metrics-server"}
	found := map[string]float64{}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		argv0, _, _ := strings.Cut(string(data), "\x00")
		for _, bin := range binaries {
			if argv0 == bin {
				var pid int
				if _, err := fmt.Sscanf(f, "/proc/%d/cmdline", &pid); err == nil {
					found[bin] += rssMiB(supervisor.Found{PID: pid})
				}
			}
		}
	}
	var total float64
	var parts []string
	for _, bin := range binaries {
		if found[bin] == 0 {
			b.Fatalf("no %s process found", bin)
		}
		total += found[bin]
		parts = append(parts, fmt.Sprintf("%s %.1f", strings.TrimPrefix(bin, "/"), found[bin]))
	}
	return total, strings.Join(parts, ", ")
}

// BenchmarkLoadBalancer measures how long a Service of type LoadBalancer
// takes from its creation until its address answers HTTP from the host
// (20 Services one after another, each deleted before the next), on a
// one-node cluster whose echo pod is ready. Run with -benchtime 1x:
//
//	LOTSE_BINARY=bin/lotse go test -run '^$' -bench LoadBalancer -benchtime 1x ./test/e2e/
func BenchmarkLoadBalancer(b *testing.B) {
	buildEchoImage(b)
	const name = "bench-lb"
	oneNodeCluster(b, name)
	cs := tenantClient(b, name)
	deployEchoApp(b, cs, "default", "web")
	readyPodOf(b, cs, "default", "web")
	ctx := context.Background()
	const services = 20
	for i := 0; i < b.N; i++ {
		var took []float64
		for k := 0; k < services; k++ {
			svcName := fmt.Sprintf("lb-%d", k)
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: svcName, Namespace: "default"},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
					Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
			}
			start := time.Now()
			if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			for {
				got, err := cs.CoreV1().Services("default").Get(ctx, svcName, metav1.GetOptions{})
				if err == nil && len(got.Status.LoadBalancer.Ingress) == 1 {
					if body, err := httpGet("http://" + got.Status.LoadBalancer.Ingress[0].IP + "/"); err == nil && strings.Contains(body, "hello from") {
						break
					}
				}
				if time.Since(start) > time.Minute {
					b.Fatalf("%s not answering after a minute", svcName)
				}
				time.Sleep(20 * time.Millisecond)
			}
			took = append(took, float64(time.Since(start).Microseconds())/1000)
			if err := cs.CoreV1().Services("default").Delete(ctx, svcName, metav1.DeleteOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(percentile(took, 50), "ms-p50-answering")
		b.ReportMetric(percentile(took, 99), "ms-max-answering")
		b.Logf("LoadBalancer Service created -> answering from the host: p50 %.0f ms, max %.0f ms (%d Services)",
			percentile(took, 50), percentile(took, 99), services)
	}
}

// oneNodeCluster creates a cluster with one node for a benchmark, waits
// until it is ready with its addons available, and deletes it (waiting)
// when the benchmark ends.
func oneNodeCluster(b *testing.B, name string) {
	mc := mgmtClient(b)
	cl := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	cl.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
	if err := mc.Create(context.Background(), cl); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { deleteAndWait(b, mc, cl) })
	waitClusterReady(b, mc, name, 15*time.Minute)
	waitCondition(b, mc, name, lotsev1.ConditionSystemComponentsHealthy, time.Time{}, 5*time.Minute)
}
