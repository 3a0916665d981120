package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// TestFleetWithNodes: three member clusters with a node each. A
// Deployment of 6 is divided 2:1 by weight between two of them and runs
// 4 + 2 Ready pods, one member running it from its mirror's tag (an
// override), its ConfigMap along; the fleet's Deployment reports 6 ready.
// When one member's node goes silent, its share moves to the other
// within the toleration plus the pods' start, and when the node is back
// the division is 4 + 2 again with no pod left over.
func TestFleetWithNodes(t *testing.T) {
	parallel(t)
	buildEchoImage(t)
	ctx := context.Background()
	mc := mgmtClient(t)
	const fleet = "fn"
	members := []struct{ name, region string }{{"fn-a", "eu"}, {"fn-b", "eu"}, {"fn-c", "us"}}
	for _, m := range members {
		c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: m.name}}
		c.Spec.Region = m.region
		c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
		if err := mc.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := mc.Create(ctx, &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = mc.Delete(ctx, &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}})
		for _, m := range members {
			_ = mc.Delete(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: m.name}})
		}
	})
	for _, m := range members {
		if err := mc.Create(ctx, &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: m.name},
			Spec: lotsev1.FleetMemberSpec{Fleet: fleet, Cluster: m.name}}); err != nil {
			t.Fatal(err)
		}
	}
	clusters := map[string]*lotsev1.Cluster{}
	for _, m := range members {
		clusters[m.name] = waitClusterReady(t, mc, m.name, 15*time.Minute)
	}
	waitFor(t, 4*time.Minute, "the fleet Ready with 3 ready members", func() (bool, error) {
		f := &lotsev1.Fleet{}
		if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, f); err != nil {
			return false, err
		}
		return f.Status.Phase == lotsev1.FleetReady && f.Status.ReadyMembers == 3, fmt.Errorf("phase %s, %d/%d members ready", f.Status.Phase, f.Status.ReadyMembers, f.Status.Members)
	})
	fc := fleetClient(t, mc, fleet)
	a, b, c := memberClient(t, "fn-a"), memberClient(t, "fn-b"), memberClient(t, "fn-c")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	labels := map[string]string{"app": "web"}
	must(fc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}))
	must(fc.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-config"}, Data: map[string]string{"greeting": "hello"}}))
	must(fc.Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](6), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "echo", Image: echoImage, ImagePullPolicy: corev1.PullNever,
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}},
					EnvFrom:   []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}}}}}}}}}}))
	weight := func(name string, w int64) policyv1.StaticClusterWeight {
		return policyv1.StaticClusterWeight{TargetCluster: policyv1.ClusterAffinity{ClusterNames: []string{name}}, Weight: w}
	}
	// The override first, so that every copy runs what it finally runs.
	must(fc.Create(ctx, &policyv1.OverridePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "b-mirror"}, Spec: policyv1.OverrideSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"}},
		OverrideRules: []policyv1.RuleWithCluster{{TargetCluster: &policyv1.ClusterAffinity{ClusterNames: []string{"fn-b"}},
			Overriders: policyv1.Overriders{ImageOverrider: []policyv1.ImageOverrider{{Component: policyv1.ImageTag, Operator: policyv1.OverrideReplace, Value: echoMirrorTag}}}}}}}))
	must(fc.Create(ctx, &policyv1.PropagationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"}},
		PropagateDeps:     true,
		Placement: policyv1.Placement{
			ClusterTolerations: []corev1.Toleration{{Key: policyv1.TaintMemberNotReady, Operator: corev1.TolerationOpExists,
				Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](5)}},
			ClusterAffinity: &policyv1.ClusterAffinity{ClusterNames: []string{"fn-a", "fn-b"}},
			ReplicaScheduling: &policyv1.ReplicaSchedulingStrategy{ReplicaSchedulingType: policyv1.ReplicaSchedulingDivided,
				ReplicaDivisionPreference: policyv1.DivisionWeighted,
				WeightPreference:          &policyv1.ClusterPreferences{StaticWeightList: []policyv1.StaticClusterWeight{weight("fn-a", 2), weight("fn-b", 1)}}}},
	}}))

	// ready is the member's Ready pods of web, and all of them.
	ready := func(cl client.Client) (int, int, error) {
		pods := &corev1.PodList{}
		if err := cl.List(ctx, pods, client.InNamespace("shop"), client.MatchingLabels(labels)); err != nil {
			return 0, 0, err
		}
		n := 0
		for _, p := range pods.Items {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
					n++
				}
			}
		}
		return n, len(pods.Items), nil
	}
	divided := func(what string, wantA, wantB int, timeout time.Duration) {
		t.Helper()
		waitFor(t, timeout, what, func() (bool, error) {
			ra, na, err := ready(a)
			if err != nil {
				return false, err
			}
			rb, nb, err := ready(b)
			if err != nil {
				return false, err
			}
			return ra == wantA && na == wantA && rb == wantB && nb == wantB, fmt.Errorf("a %d of %d ready, b %d of %d", ra, na, rb, nb)
		})
	}
	divided("4 + 2 Ready pods", 4, 2, 4*time.Minute)
	for cl, tag := range map[client.Client]string{a: "e2e", b: echoMirrorTag} {
		d := &appsv1.Deployment{}
		must(cl.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, d))
		if got := d.Spec.Template.Spec.Containers[0].Image; got != echoImageAt(tag) {
			t.Errorf("a member runs %s, want %s", got, echoImageAt(tag))
		}
		cm := &corev1.ConfigMap{}
		must(cl.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web-config"}, cm))
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, &appsv1.Deployment{}); err == nil {
		t.Error("the member the policy leaves out got the Deployment")
	}
	fleetReady := func(what string, want int32) {
		t.Helper()
		waitFor(t, 2*time.Minute, what, func() (bool, error) {
			d := &appsv1.Deployment{}
			if err := fc.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, d); err != nil {
				return false, err
			}
			st := d.Status
			return st.ObservedGeneration == d.Generation && st.ReadyReplicas == want && st.UpdatedReplicas == want && st.AvailableReplicas == want,
				fmt.Errorf("status %+v", st)
		})
	}
	fleetReady("the fleet's Deployment: 6 ready", 6)
	// A rollout in the fleet: kubectl follows it on the template's status
	// and returns once every member's copy has rolled out.
	fleetKubeconfig := filepath.Join(t.TempDir(), "fleet.kubeconfig")
	mustCLI(t, "fleet", "kubeconfig", fleet, "--output-file", fleetKubeconfig)
	must(fc.Patch(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}},
		client.RawPatch(types.MergePatchType, []byte(`{"spec":{"template":{"metadata":{"annotations":{"e2e/rollout":"2"}}}}}`))))
	if out, err := exec.Command(kubectlPath(t), "--kubeconfig", fleetKubeconfig, "rollout", "status", "deployment/web",
		"--namespace", "shop", "--timeout", scaled(4*time.Minute)).CombinedOutput(); err != nil || !strings.Contains(string(out), "successfully rolled out") {
		t.Fatalf("kubectl rollout status against the fleet: %v\n%s", err, out)
	}
	for name, cl := range map[string]client.Client{"fn-a": a, "fn-b": b} {
		d := &appsv1.Deployment{}
		must(cl.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, d))
		st := d.Status
		if d.Spec.Template.Annotations["e2e/rollout"] != "2" || st.ObservedGeneration != d.Generation ||
			st.UpdatedReplicas != ptr.Deref(d.Spec.Replicas, 0) || st.AvailableReplicas != st.UpdatedReplicas {
			t.Errorf("rollout status returned before %s rolled out: template %v, status %+v", name, d.Spec.Template.Annotations, st)
		}
	}
	divided("4 + 2 after the rollout, nothing left over", 4, 2, 2*time.Minute)

	// b's node goes silent (its kubelet frozen): once it is NotReady, b
	// has no Ready node, and after the toleration its share runs in a.
	victim := listMachines(t, mc, "fn-b")[0]
	pids := pidsInNetns(machineNSOf(t, clusters["fn-b"], victim.Status.Addresses[0].Address), "kubelet")
	if len(pids) != 1 {
		t.Fatalf("kubelet pids of fn-b: %v", pids)
	}
	var thaw sync.Once
	thawKubelet := func() { thaw.Do(func() { _ = syscall.Kill(pids[0], syscall.SIGCONT) }) }
	t.Cleanup(thawKubelet)
	frozen := time.Now()
	must(syscall.Kill(pids[0], syscall.SIGSTOP))
	waitFor(t, 3*time.Minute, "a running 6 Ready pods", func() (bool, error) {
		ra, _, err := ready(a)
		return ra == 6, fmt.Errorf("a %d ready (%v)", ra, err)
	})
	t.Logf("b's share Ready in a %s after its kubelet froze (node grace, toleration, pod start)", time.Since(frozen).Round(time.Second))
	thawKubelet()
	thawed := time.Now()
	divided("4 + 2 again, nothing left over", 4, 2, 4*time.Minute)
	t.Logf("4 + 2 again %s after the kubelet came back", time.Since(thawed).Round(time.Second))
	fleetReady("the fleet's Deployment: 6 ready again", 6)
}
