package e2e

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// BenchmarkFleetPropagation measures, with a fleet of 3 workerless
// members: the time from a change of a Deployment in the fleet to the
// change being in every member (200 changes, p50 and p99, as watches on
// the members see it), and the failover time from a member going down
// (hibernated) to its share of a divided Deployment running in the
// other members (toleration 5 s). Run with -benchtime 1x:
//
//	LOTSE_BINARY=bin/lotse go test -run '^$' -bench FleetPropagation -benchtime 1x ./test/e2e/
func BenchmarkFleetPropagation(b *testing.B) {
	ctx := context.Background()
	mc := mgmtClient(b)
	const fleet = "bf"
	members := []string{"bf-1", "bf-2", "bf-3"}
	for _, name := range members {
		if err := mc.Create(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}); err != nil {
			b.Fatal(err)
		}
	}
	if err := mc.Create(ctx, &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = mc.Delete(ctx, &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}})
		waitFor(b, 3*time.Minute, "the fleet gone", func() (bool, error) {
			err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, &lotsev1.Fleet{})
			return apierrors.IsNotFound(err), err
		})
		for _, name := range members {
			deleteAndWait(b, mc, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
		}
	})
	for _, name := range members {
		if err := mc.Create(ctx, &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: lotsev1.FleetMemberSpec{Fleet: fleet, Cluster: name}}); err != nil {
			b.Fatal(err)
		}
	}
	waitFor(b, 5*time.Minute, "the fleet Ready with 3 ready members", func() (bool, error) {
		f := &lotsev1.Fleet{}
		if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, f); err != nil {
			return false, err
		}
		return f.Status.Phase == lotsev1.FleetReady && f.Status.ReadyMembers == 3, nil
	})
	fc := fleetClient(b, mc, fleet)
	labels := map[string]string{"app": "bench"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bench"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](6), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/bench:1"}}}}}}
	if err := fc.Create(ctx, dep); err != nil {
		b.Fatal(err)
	}
	if err := fc.Create(ctx, &policyv1.PropagationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bench"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "apps/v1", Kind: "Deployment", Name: "bench"}},
		Placement: policyv1.Placement{
			ClusterTolerations: []corev1.Toleration{{Key: policyv1.TaintMemberNotReady, Operator: corev1.TolerationOpExists,
				Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](5)}},
			ReplicaScheduling: &policyv1.ReplicaSchedulingStrategy{ReplicaSchedulingType: policyv1.ReplicaSchedulingDivided}},
	}}); err != nil {
		b.Fatal(err)
	}

	watches := map[string]watch.Interface{}
	for _, name := range members {
		cs := kubernetes.NewForConfigOrDie(tenantConfig(b, name))
		w, err := cs.AppsV1().Deployments("default").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=bench"})
		if err != nil {
			b.Fatal(err)
		}
		watches[name] = w
	}
	const changes = 200
	var latencies []float64
	for i := 0; i < b.N; i++ {
		latencies = append(latencies, allMembersLatency(b, watches, i*changes+1, changes, func(seq int) error {
			patch := []byte(`{"metadata":{"annotations":{"bench/seq":"` + strconv.Itoa(seq) + `"}}}`)
			return fc.Patch(ctx, dep.DeepCopy(), client.RawPatch(types.MergePatchType, patch))
		})...)
	}
	p50, p99, max := percentiles(latencies)
	b.ReportMetric(p50, "ms-p50")
	b.ReportMetric(p99, "ms-p99")
	b.Logf("template change -> in all %d members: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d changes)", len(members), p50, p99, max, len(latencies))

	// The same for an object of a custom kind (its CRD propagated first):
	// the engine reads a member's custom copy live, not from a watch.
	if err := fc.Create(ctx, widgetsCRD()); err != nil {
		b.Fatal(err)
	}
	if err := fc.Create(ctx, widgetsPolicy()); err != nil {
		b.Fatal(err)
	}
	widget := widgetIn("default", "bench")
	waitFor(b, time.Minute, "the fleet serving Widgets", func() (bool, error) {
		err := fc.Create(ctx, widget.DeepCopy())
		return err == nil || apierrors.IsAlreadyExists(err), err
	})
	widgets := map[string]watch.Interface{}
	for _, name := range members {
		dc := dynamic.NewForConfigOrDie(tenantConfig(b, name))
		res := dc.Resource(schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}).Namespace("default")
		waitFor(b, 2*time.Minute, "the Widget in "+name, func() (bool, error) {
			_, err := res.Get(ctx, "bench", metav1.GetOptions{})
			return err == nil, err
		})
		w, err := res.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=bench"})
		if err != nil {
			b.Fatal(err)
		}
		widgets[name] = w
	}
	customLatencies := allMembersLatency(b, widgets, 1, 100, func(seq int) error {
		patch := []byte(`{"metadata":{"annotations":{"bench/seq":"` + strconv.Itoa(seq) + `"}}}`)
		return fc.Patch(ctx, widget.DeepCopy(), client.RawPatch(types.MergePatchType, patch))
	})
	p50, p99, max = percentiles(customLatencies)
	b.ReportMetric(p50, "ms-custom-p50")
	b.ReportMetric(p99, "ms-custom-p99")
	b.Logf("custom object change -> in all %d members: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d changes)", len(members), p50, p99, max, len(customLatencies))

	// The floor on this machine: the same change written straight into one
	// member and seen by a watch there (one API write, one watch event;
	// the fleet's path has two of each).
	direct := directChangeLatency(b, tenantConfig(b, "bf-1"), 100)
	b.ReportMetric(direct, "ms-direct-p50")
	b.Logf("the same change straight into one member, seen by its watch: p50 %.1f ms", direct)

	// Failover: bf-3 goes down; its 2 replicas move to the other two.
	replicas := func(name string) int32 {
		d, err := kubernetes.NewForConfigOrDie(tenantConfig(b, name)).AppsV1().Deployments("default").Get(ctx, "bench", metav1.GetOptions{})
		if err != nil {
			return -1
		}
		return ptr.Deref(d.Spec.Replicas, 0)
	}
	waitFor(b, time.Minute, "2 + 2 + 2", func() (bool, error) {
		return replicas("bf-1") == 2 && replicas("bf-2") == 2 && replicas("bf-3") == 2, nil
	})
	start := time.Now()
	updateCluster(b, mc, "bf-3", func(c *lotsev1.Cluster) { c.Spec.Hibernation = &lotsev1.HibernationSpec{Enabled: ptr.To(true)} })
	waitFor(b, 2*time.Minute, "3 + 3 in the others", func() (bool, error) {
		return replicas("bf-1") == 3 && replicas("bf-2") == 3, nil
	})
	failover := time.Since(start).Seconds()
	b.ReportMetric(failover, "s-failover")
	b.Logf("member down -> its share in the others: %.1f s (toleration 5 s, probe interval 5 s)", failover)
}

// allMembersLatency makes n changes (patch(seq) for seq = first,
// first+1, ...: each sets the annotation bench/seq) and returns, for each,
// the milliseconds until every member's watch saw it. The watches are
// stopped at the end.
func allMembersLatency(b *testing.B, watches map[string]watch.Interface, first, n int, patch func(seq int) error) []float64 {
	type seen struct {
		member string
		seq    int
		at     time.Time
	}
	events := make(chan seen, 1024)
	var wg sync.WaitGroup
	for name, w := range watches {
		wg.Add(1)
		go func(name string, w watch.Interface) {
			defer wg.Done()
			for ev := range w.ResultChan() {
				obj, err := meta.Accessor(ev.Object)
				if err != nil {
					continue
				}
				if n, err := strconv.Atoi(obj.GetAnnotations()["bench/seq"]); err == nil {
					events <- seen{name, n, time.Now()}
				}
			}
		}(name, w)
	}
	defer func() {
		for _, w := range watches {
			w.Stop()
		}
		go func() {
			for range events { // the watchers may be blocked sending
			}
		}()
		wg.Wait()
		close(events)
	}()
	var latencies []float64
	for seq := first; seq < first+n; seq++ {
		start := time.Now()
		if err := patch(seq); err != nil {
			b.Fatal(err)
		}
		got := map[string]bool{}
		timeout := time.After(30 * time.Second)
		for len(got) < len(watches) {
			select {
			case ev := <-events:
				if ev.seq == seq {
					got[ev.member] = true
					if len(got) == len(watches) {
						latencies = append(latencies, ev.at.Sub(start).Seconds()*1000)
					}
				}
			case <-timeout:
				b.Fatalf("change %d reached only %v", seq, got)
			}
		}
	}
	return latencies
}

// percentiles returns the median, the 99th percentile and the maximum.
func percentiles(samples []float64) (p50, p99, max float64) {
	sort.Float64s(samples)
	p := func(q float64) float64 { return samples[int(q*float64(len(samples)-1))] }
	return p(0.5), p(0.99), samples[len(samples)-1]
}

// directChangeLatency patches a ConfigMap n times in one cluster and
// returns the median milliseconds until a watch there sees each change.
func directChangeLatency(b *testing.B, cfg *rest.Config, n int) float64 {
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(cfg)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bench-direct"}}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	w, err := cs.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=bench-direct"})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	var samples []float64
	for i := 1; i <= n; i++ {
		patch := []byte(`{"metadata":{"annotations":{"bench/seq":"` + strconv.Itoa(i) + `"}}}`)
		start := time.Now()
		if _, err := cs.CoreV1().ConfigMaps("default").Patch(ctx, "bench-direct", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			b.Fatal(err)
		}
		for ev := range w.ResultChan() {
			if c, ok := ev.Object.(*corev1.ConfigMap); ok && c.Annotations["bench/seq"] == strconv.Itoa(i) {
				samples = append(samples, float64(time.Since(start).Microseconds())/1000)
				break
			}
		}
	}
	return median(samples)
}

// BenchmarkFleetPullPropagation measures the pull path: a fleet with one
// pull-mode member whose agent (`lotse fleet agent`, on this host) applies
// its Works. 100 changes of a Deployment in the fleet, each timed from
// the patch to the change seen by a watch in the member: the fleet writes
// the member's Work, the agent's watch sees it and applies the copy.
//
//	make build && LOTSE_BINARY=$PWD/bin/lotse LOTSE_E2E_STATE_DIR=/tmp/lotse-bench \
//	  go test -count=1 -timeout 30m -run '^$' -bench FleetPullPropagation -benchtime 1x ./test/e2e/
func BenchmarkFleetPullPropagation(b *testing.B) {
	ctx := context.Background()
	mc := mgmtClient(b)
	const fleet, member = "bp", "bp-m"
	if err := mc.Create(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: member}}); err != nil {
		b.Fatal(err)
	}
	if err := mc.Create(ctx, &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = mc.Delete(ctx, &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}})
		waitFor(b, 3*time.Minute, "the fleet gone", func() (bool, error) {
			err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, &lotsev1.Fleet{})
			return apierrors.IsNotFound(err), err
		})
		deleteAndWait(b, mc, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: member}})
	})
	waitClusterReady(b, mc, member, 5*time.Minute)
	waitFor(b, 4*time.Minute, "the fleet Ready", func() (bool, error) {
		f := &lotsev1.Fleet{}
		if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, f); err != nil {
			return false, err
		}
		return f.Status.Phase == lotsev1.FleetReady, nil
	})
	bootstrap := b.TempDir() + "/bootstrap.kubeconfig"
	mustCLI(b, "fleet", "register", fleet, member, "--bootstrap-kubeconfig", bootstrap)
	startFleetAgent(b, member, bootstrap, clusterDir(member)+"/pki/admin.kubeconfig")
	waitFor(b, 2*time.Minute, "the member ready", func() (bool, error) {
		m := &lotsev1.FleetMember{}
		if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: member}, m); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(m.Status.Conditions, lotsev1.ConditionMemberReady), nil
	})
	fc := fleetClient(b, mc, fleet)
	labels := map[string]string{"app": "bench"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bench"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/bench:1"}}}}}}
	if err := fc.Create(ctx, dep); err != nil {
		b.Fatal(err)
	}
	if err := fc.Create(ctx, &policyv1.PropagationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bench"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "apps/v1", Kind: "Deployment", Name: "bench"}}}}); err != nil {
		b.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(tenantConfig(b, member))
	waitFor(b, 2*time.Minute, "the Deployment in the member", func() (bool, error) {
		_, err := cs.AppsV1().Deployments("default").Get(ctx, "bench", metav1.GetOptions{})
		return err == nil, err
	})
	w, err := cs.AppsV1().Deployments("default").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=bench"})
	if err != nil {
		b.Fatal(err)
	}
	const changes = 100
	var latencies []float64
	for i := 0; i < b.N; i++ {
		latencies = append(latencies, allMembersLatency(b, map[string]watch.Interface{member: w}, i*changes+1, changes, func(seq int) error {
			patch := []byte(`{"metadata":{"annotations":{"bench/seq":"` + strconv.Itoa(seq) + `"}}}`)
			return fc.Patch(ctx, dep.DeepCopy(), client.RawPatch(types.MergePatchType, patch))
		})...)
	}
	p50, p99, max := percentiles(latencies)
	b.ReportMetric(p50, "ms-p50")
	b.ReportMetric(p99, "ms-p99")
	b.Logf("template change -> in the pull-mode member: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d changes)", p50, p99, max, len(latencies))
}
