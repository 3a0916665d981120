package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
)

// fleetKubeconfigOf is the admin configuration of a fleet's API.
func fleetKubeconfigOf(t testing.TB, mc client.Client, fleet string) *rest.Config {
	t.Helper()
	f := &lotsev1.Fleet{}
	if err := mc.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: fleet}, f); err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{}
	if err := mc.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: f.Status.KubeconfigSecret}, s); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(s.Data["kubeconfig"])
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// fleetClient is a client of a fleet's API.
func fleetClient(t testing.TB, mc client.Client, fleet string) client.Client {
	t.Helper()
	cfg := fleetKubeconfigOf(t, mc, fleet)
	// Not client-go's default 5 requests a second: the benchmarks time
	// each patch, and that limit alone would add 200 ms to every one.
	cfg.QPS, cfg.Burst = 1000, 1000
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, policyv1.AddToScheme, workv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func memberClient(t testing.TB, name string) client.Client {
	t.Helper()
	c, err := client.New(tenantConfig(t, name), client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// widgetsCRD defines the kind Widget (example.com/v1), namespaced.
func widgetsCRD() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets.example.com"},
		"spec": map[string]any{"group": "example.com", "scope": "Namespaced",
			"names": map[string]any{"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "properties": map[string]any{
					"spec": map[string]any{"type": "object", "properties": map[string]any{"size": map[string]any{"type": "string"}}}}}}}}},
	}}
}

// widgetIn is a Widget (see widgetsCRD) of size small.
func widgetIn(namespace, name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "example.com/v1", "kind": "Widget",
		"metadata": map[string]any{"namespace": namespace, "name": name}, "spec": map[string]any{"size": "small"}}}
}

// widgetsPolicy sends the Widget CRD and every Widget to every member.
func widgetsPolicy() *policyv1.ClusterPropagationPolicy {
	return &policyv1.ClusterPropagationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "widgets"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{
			{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition", Name: "widgets.example.com"},
			{APIVersion: "example.com/v1", Kind: "Widget"}}}}
}

// TestFleetPropagation: a fleet with two (workerless) members divides a
// Deployment 2:1 by weight, sends the ConfigMap it refers to along
// (propagateDeps), overrides its image in one member, aggregates the
// members' status into the template, moves a stopped member's share to the
// other and back, moves everything when the policy changes, leaves a
// member's own object alone, and cleans a member that leaves.
func TestFleetPropagation(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	mc := mgmtClient(t)
	const fleet = "fl"
	members := []string{"fl-eu", "fl-us"}
	for _, name := range members {
		if err := mc.Create(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := mc.Create(ctx, &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = mc.Delete(ctx, &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}})
		waitFor(t, 3*time.Minute, "the fleet gone", func() (bool, error) {
			err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, &lotsev1.Fleet{})
			return apierrors.IsNotFound(err), err
		})
		for _, name := range members {
			_ = mc.Delete(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
		}
	})
	for i, name := range members {
		region := []string{"eu", "us"}[i]
		m := &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{"tier": "gold"}},
			Spec: lotsev1.FleetMemberSpec{Fleet: fleet, Cluster: name, Region: region}}
		if err := mc.Create(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Bad input: a member is one cluster for its life.
	// (The controller adds its finalizer meanwhile: a conflict is tried
	// again, so that the answer is the API's verdict on the change.)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		moved := &lotsev1.FleetMember{}
		if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: "fl-us"}, moved); err != nil {
			return err
		}
		moved.Spec.Cluster = "fl-eu"
		return mc.Update(ctx, moved)
	})
	if err == nil || !strings.Contains(err.Error(), "immutable") {
		t.Errorf("changing a member's cluster: %v", err)
	}
	// Bad input: a member needs exactly one way in.
	bad := &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "fl-bad"}, Spec: lotsev1.FleetMemberSpec{Fleet: fleet}}
	if err := mc.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "spec.kubeconfigSecretRef") {
		t.Errorf("a member without cluster or kubeconfig: %v", err)
	}

	waitFor(t, 4*time.Minute, "the fleet Ready with 2 ready members", func() (bool, error) {
		f := &lotsev1.Fleet{}
		if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, f); err != nil {
			return false, err
		}
		return f.Status.Phase == lotsev1.FleetReady && f.Status.ReadyMembers == 2, fmt.Errorf("phase %s, %d/%d members ready", f.Status.Phase, f.Status.ReadyMembers, f.Status.Members)
	})
	fc := fleetClient(t, mc, fleet)
	eu, us := memberClient(t, "fl-eu"), memberClient(t, "fl-us")

	// The templates.
	labels := map[string]string{"app": "web"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}))
	must(fc.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-config"}, Data: map[string]string{"greeting": "hello"}}))
	must(fc.Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](6), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "web", Image: "registry.invalid/web:1",
					EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}}}}}}}}}}))
	must(fc.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "unrelated"}}))
	weight := func(name string, w int64) policyv1.StaticClusterWeight {
		return policyv1.StaticClusterWeight{TargetCluster: policyv1.ClusterAffinity{ClusterNames: []string{name}}, Weight: w}
	}
	pp := &policyv1.PropagationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"}},
		PropagateDeps:     true,
		Placement: policyv1.Placement{
			ClusterTolerations: []corev1.Toleration{{Key: policyv1.TaintMemberNotReady, Operator: corev1.TolerationOpExists,
				Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](5)}},
			ClusterAffinity: &policyv1.ClusterAffinity{LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "gold"}}},
			ReplicaScheduling: &policyv1.ReplicaSchedulingStrategy{ReplicaSchedulingType: policyv1.ReplicaSchedulingDivided,
				ReplicaDivisionPreference: policyv1.DivisionWeighted,
				WeightPreference:          &policyv1.ClusterPreferences{StaticWeightList: []policyv1.StaticClusterWeight{weight("fl-eu", 2), weight("fl-us", 1)}}}},
	}}
	must(fc.Create(ctx, pp))
	must(fc.Create(ctx, &policyv1.OverridePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "us-mirror"}, Spec: policyv1.OverrideSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "apps/v1", Kind: "Deployment"}},
		OverrideRules: []policyv1.RuleWithCluster{{TargetCluster: &policyv1.ClusterAffinity{ClusterNames: []string{"fl-us"}},
			Overriders: policyv1.Overriders{
				ImageOverrider:  []policyv1.ImageOverrider{{Component: policyv1.ImageRegistry, Operator: policyv1.OverrideReplace, Value: "us.mirror.invalid"}},
				LabelsOverrider: []policyv1.LabelAnnotationOverrider{{Operator: policyv1.OverrideAdd, Value: map[string]string{"region": "us"}}}}}},
	}}))

	replicasIn := func(c client.Client) (int32, error) {
		d := &appsv1.Deployment{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, d); err != nil {
			return -1, err
		}
		return ptr.Deref(d.Spec.Replicas, 0), nil
	}
	waitFor(t, time.Minute, "web divided 4 + 2", func() (bool, error) {
		a, err := replicasIn(eu)
		if err != nil {
			return false, err
		}
		b, err := replicasIn(us)
		return a == 4 && b == 2, fmt.Errorf("eu %d, us %d (%v)", a, b, err)
	})
	// The ConfigMap the Deployment refers to followed it; the other one
	// stayed in the fleet.
	for _, c := range []client.Client{eu, us} {
		cm := &corev1.ConfigMap{}
		waitFor(t, 2*time.Minute, "the dependency in the member", func() (bool, error) {
			err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web-config"}, cm)
			return err == nil, err
		})
		if cm.Data["greeting"] != "hello" || cm.Labels[lotsev1.LabelFleet] != fleet {
			t.Errorf("member copy of the ConfigMap: %v %v", cm.Data, cm.Labels)
		}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "unrelated"}, cm); !apierrors.IsNotFound(err) {
			t.Errorf("a ConfigMap no workload refers to went to a member: %v", err)
		}
	}
	waitFor(t, 2*time.Minute, "the dependency's binding", func() (bool, error) {
		b := &workv1.ResourceBinding{}
		if err := fc.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web-config-configmap"}, b); err != nil {
			return false, err
		}
		return len(b.Spec.RequiredBy) == 1 && b.Spec.RequiredBy[0].Name == "web-deployment" && len(b.Spec.Clusters) == 2, fmt.Errorf("spec %+v", b.Spec)
	})
	// The override: us pulls from its mirror and carries its label; eu
	// keeps the template's image.
	images := map[client.Client]string{eu: "registry.invalid/web:1", us: "us.mirror.invalid/web:1"}
	for c, want := range images {
		// The OverridePolicy came after the PropagationPolicy: the first
		// copies may predate it.
		waitFor(t, 2*time.Minute, "the override in the member", func() (bool, error) {
			d := &appsv1.Deployment{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, d); err != nil {
				return false, err
			}
			got := d.Spec.Template.Spec.Containers[0].Image
			return got == want && (c == us) == (d.Labels["region"] == "us"), fmt.Errorf("image %s (want %s), labels %v", got, want, d.Labels)
		})
	}
	// The members' controllers made the pods (pending: no nodes); the
	// fleet's template says how many, for the generation it has. A member
	// whose first copy predates the override is stuck mid-rollout with a
	// surge pod (no pod can become available), so the count is the
	// members' own, not always 6.
	waitFor(t, 2*time.Minute, "the template's aggregated status", func() (bool, error) {
		var want int32
		for _, c := range []client.Client{eu, us} {
			md := &appsv1.Deployment{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, md); err != nil {
				return false, err
			}
			if md.Status.ObservedGeneration != md.Generation {
				return false, fmt.Errorf("a member's Deployment is at generation %d, its status at %d", md.Generation, md.Status.ObservedGeneration)
			}
			want += md.Status.Replicas
		}
		d := &appsv1.Deployment{}
		if err := fc.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, d); err != nil {
			return false, err
		}
		return want >= 6 && d.Status.Replicas == want && d.Status.ObservedGeneration == d.Generation, fmt.Errorf("status %+v, members' replicas %d", d.Status, want)
	})
	rb := &workv1.ResourceBinding{}
	must(fc.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web-deployment"}, rb)) // written before the template's status
	if !meta.IsStatusConditionTrue(rb.Status.Conditions, workv1.ConditionFullyApplied) || len(rb.Status.AggregatedStatus) != 2 ||
		rb.Spec.Replicas != 6 || len(rb.Spec.Clusters) != 2 {
		t.Errorf("binding: spec %+v status %+v", rb.Spec, rb.Status)
	}
	// The fleet itself runs no workload controllers: its Deployment makes
	// no ReplicaSet there.
	rss := &appsv1.ReplicaSetList{}
	must(fc.List(ctx, rss, client.InNamespace("shop")))
	if len(rss.Items) != 0 {
		t.Errorf("the fleet's control plane made %d ReplicaSets from a template", len(rss.Items))
	}

	// A scale in the fleet is divided again.
	d := &appsv1.Deployment{}
	must(fc.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, d))
	d.Spec.Replicas = ptr.To[int32](9)
	must(fc.Update(ctx, d))
	waitFor(t, time.Minute, "web divided 6 + 3", func() (bool, error) {
		a, err := replicasIn(eu)
		if err != nil {
			return false, err
		}
		b, err := replicasIn(us)
		return a == 6 && b == 3, fmt.Errorf("eu %d, us %d (%v)", a, b, err)
	})

	// A member that stops answering loses its share after the toleration
	// (5 s here); nothing is deleted from it meanwhile. Back, it gets its
	// share again, and no replica is counted twice.
	updateCluster(t, mc, "fl-us", func(c *lotsev1.Cluster) { c.Spec.Hibernation = &lotsev1.HibernationSpec{Enabled: ptr.To(true)} })
	waitFor(t, 2*time.Minute, "the stopped member's share in eu", func() (bool, error) {
		a, err := replicasIn(eu)
		return a == 9, fmt.Errorf("eu %d (%v)", a, err)
	})
	waitFor(t, 2*time.Minute, "the binding after failover", func() (bool, error) {
		if err := fc.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web-deployment"}, rb); err != nil {
			return false, err
		}
		return len(rb.Spec.Clusters) == 1 && rb.Spec.Clusters[0].Name == "fl-eu", fmt.Errorf("clusters %+v", rb.Spec.Clusters)
	})
	updateCluster(t, mc, "fl-us", func(c *lotsev1.Cluster) { c.Spec.Hibernation.Enabled = ptr.To(false) })
	waitFor(t, 3*time.Minute, "6 + 3 again after the member is back", func() (bool, error) {
		a, err := replicasIn(eu)
		if err != nil {
			return false, err
		}
		b, err := replicasIn(us)
		return a == 6 && b == 3, fmt.Errorf("eu %d, us %d (%v)", a, b, err)
	})

	// A member's own object is not overwritten (conflictResolution Abort).
	must(fc.Create(ctx, &policyv1.ClusterPropagationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "theirs"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "theirs"}}}}))
	must(us.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "theirs"}, Data: map[string]string{"owner": "member"}}))
	must(fc.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "theirs"}, Data: map[string]string{"owner": "fleet"}}))
	waitFor(t, time.Minute, "the conflict reported in the binding", func() (bool, error) {
		b := &workv1.ResourceBinding{}
		if err := fc.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "theirs-configmap"}, b); err != nil {
			return false, err
		}
		for _, it := range b.Status.AggregatedStatus {
			if it.ClusterName == "fl-us" && !it.Applied && strings.Contains(it.AppliedMessage, "conflictResolution: Overwrite") {
				return true, nil
			}
		}
		return false, fmt.Errorf("status %+v", b.Status)
	})
	cm := &corev1.ConfigMap{}
	must(us.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "theirs"}, cm))
	if cm.Data["owner"] != "member" {
		t.Errorf("the member's own ConfigMap was overwritten: %v", cm.Data)
	}
	must(eu.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "theirs"}, cm))
	if cm.Data["owner"] != "fleet" {
		t.Errorf("the other member did not get its share: %v", cm.Data)
	}

	// Spread constraints: at most one member takes the ConfigMap (with
	// equal room, neither has nodes, the first by name); a minimum the
	// fleet cannot meet is reported and moves nothing.
	bothWays := &policyv1.ClusterPropagationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "both-ways"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "v1", Kind: "ConfigMap"}},
		Placement: policyv1.Placement{SpreadConstraints: []policyv1.SpreadConstraint{
			{SpreadByField: policyv1.SpreadByRegion, SpreadByLabel: "tier"}}}}}
	if err := fc.Create(ctx, bothWays); err == nil || !strings.Contains(err.Error(), "exactly one of spreadByField and spreadByLabel") {
		t.Errorf("a spread constraint by field and label: %v", err)
		if err == nil {
			must(fc.Delete(ctx, bothWays))
		}
	}
	solo := &policyv1.ClusterPropagationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "solo"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "solo"}},
		Placement:         policyv1.Placement{SpreadConstraints: []policyv1.SpreadConstraint{{SpreadByField: policyv1.SpreadByCluster, MaxGroups: 1}}}}}
	must(fc.Create(ctx, solo))
	must(fc.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "solo"}}))
	waitFor(t, time.Minute, "solo placed on one member, and there", func() (bool, error) {
		b := &workv1.ResourceBinding{}
		if err := fc.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "solo-configmap"}, b); err != nil {
			return false, err
		}
		errEU := eu.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "solo"}, &corev1.ConfigMap{})
		return len(b.Spec.Clusters) == 1 && b.Spec.Clusters[0].Name == "fl-eu" && errEU == nil, fmt.Errorf("targets %+v, eu: %v", b.Spec.Clusters, errEU)
	})
	if err := us.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "solo"}, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Errorf("solo in the other member: %v", err)
	}
	must(fc.Get(ctx, client.ObjectKey{Name: "solo"}, solo))
	solo.Spec.Placement.SpreadConstraints = []policyv1.SpreadConstraint{{SpreadByField: policyv1.SpreadByRegion, MinGroups: 3}}
	must(fc.Update(ctx, solo))
	waitFor(t, time.Minute, "the unmet minGroups in the binding", func() (bool, error) {
		b := &workv1.ResourceBinding{}
		if err := fc.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "solo-configmap"}, b); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(b.Status.Conditions, workv1.ConditionScheduled)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "minGroups is 3"), fmt.Errorf("conditions %+v", b.Status.Conditions)
	})
	if err := eu.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "solo"}, &corev1.ConfigMap{}); err != nil {
		t.Errorf("a failed placement moved the ConfigMap: %v", err)
	}

	// A CRD and an object of its kind: the CRD goes first, then the
	// object; an object deleted in the fleet goes from the members.
	must(fc.Create(ctx, widgetsCRD()))
	must(fc.Create(ctx, widgetsPolicy()))
	widget := func(name string) *unstructured.Unstructured { return widgetIn("shop", name) }
	waitFor(t, time.Minute, "the fleet serving Widgets", func() (bool, error) {
		err := fc.Create(ctx, widget("small"))
		return err == nil || apierrors.IsAlreadyExists(err), err
	})
	for _, c := range []client.Client{eu, us} {
		waitFor(t, 2*time.Minute, "the Widget in the member", func() (bool, error) {
			w := widget("")
			if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "small"}, w); err != nil {
				return false, err
			}
			size, _, _ := unstructured.NestedString(w.Object, "spec", "size")
			return size == "small" && w.GetLabels()[lotsev1.LabelFleet] == fleet, fmt.Errorf("spec %v, labels %v", w.Object["spec"], w.GetLabels())
		})
	}
	waitFor(t, time.Minute, "the Widget's binding", func() (bool, error) {
		b := &workv1.ResourceBinding{}
		if err := fc.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "small-widget.example.com"}, b); err != nil {
			return false, err
		}
		return len(b.Spec.Clusters) == 2 && meta.IsStatusConditionTrue(b.Status.Conditions, workv1.ConditionFullyApplied), fmt.Errorf("spec %+v, status %+v", b.Spec, b.Status)
	})
	must(fc.Create(ctx, widget("short-lived")))
	waitFor(t, time.Minute, "the second Widget in both members", func() (bool, error) {
		errEU := eu.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "short-lived"}, widget(""))
		errUS := us.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "short-lived"}, widget(""))
		return errEU == nil && errUS == nil, fmt.Errorf("eu: %v, us: %v", errEU, errUS)
	})
	must(fc.Delete(ctx, widget("short-lived")))
	waitFor(t, time.Minute, "the deleted Widget gone from the members", func() (bool, error) {
		errEU := eu.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "short-lived"}, widget(""))
		errUS := us.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "short-lived"}, widget(""))
		return apierrors.IsNotFound(errEU) && apierrors.IsNotFound(errUS), fmt.Errorf("eu: %v, us: %v", errEU, errUS)
	})

	// The policy narrows to one member: everything moves there, and the
	// other member's copies go (only those the fleet made).
	must(fc.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, pp))
	pp.Spec.Placement.ClusterAffinity = &policyv1.ClusterAffinity{FieldSelector: &policyv1.FieldSelector{
		MatchExpressions: []policyv1.FieldSelectorRequirement{{Key: "region", Operator: "In", Values: []string{"eu"}}}}}
	must(fc.Update(ctx, pp))
	waitFor(t, time.Minute, "web all in eu, gone from us", func() (bool, error) {
		a, err := replicasIn(eu)
		if err != nil {
			return false, err
		}
		_, err = replicasIn(us)
		return a == 9 && apierrors.IsNotFound(err), fmt.Errorf("eu %d, us: %v", a, err)
	})
	must(us.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "theirs"}, cm))
	if cm.Data["owner"] != "member" {
		t.Errorf("the member's own ConfigMap changed: %v", cm.Data)
	}

	// A member that leaves loses what the fleet put there.
	must(mc.Delete(ctx, &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "fl-eu"}}))
	waitFor(t, time.Minute, "the leaving member cleaned", func() (bool, error) {
		_, err := replicasIn(eu)
		if !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("deployment in eu: %v", err)
		}
		err = eu.Get(ctx, client.ObjectKey{Name: "shop"}, &corev1.Namespace{})
		if err == nil {
			return false, fmt.Errorf("namespace shop still in eu")
		}
		if !apierrors.IsNotFound(err) {
			return false, err
		}
		// The CRD the fleet put there goes too (no object of its kind is
		// the member's own).
		crd := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition"}}
		err = eu.Get(ctx, client.ObjectKey{Name: "widgets.example.com"}, crd)
		return apierrors.IsNotFound(err), fmt.Errorf("the CRD in eu: %v", err)
	})
}
