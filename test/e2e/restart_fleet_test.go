package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
)

// TestRestartDuringFederation: killing lotse right after a Deployment is
// put into a fleet, and again while a member's share is failing over,
// ends with every replica placed once: 5 + 5, then 10 in the member that
// stayed (the stopped member's copy kept, not deleted), then 5 + 5 again.
func TestRestartDuringFederation(t *testing.T) {
	ctx := context.Background()
	mc := mgmtClient(t)
	const fleet = "rf"
	members := []string{"rf-a", "rf-b"}
	for _, name := range members {
		if err := mc.Create(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := mc.Create(ctx, &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mc := mgmtClient(t)
		_ = mc.Delete(ctx, &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}})
		waitFor(t, 3*time.Minute, "the fleet gone", func() (bool, error) {
			err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, &lotsev1.Fleet{})
			return apierrors.IsNotFound(err), err
		})
		for _, name := range members {
			deleteAndWait(t, mc, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
		}
	})
	for _, name := range members {
		if err := mc.Create(ctx, &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: lotsev1.FleetMemberSpec{Fleet: fleet, Cluster: name}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 4*time.Minute, "the fleet Ready with 2 ready members", func() (bool, error) {
		f := &lotsev1.Fleet{}
		if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, f); err != nil {
			return false, err
		}
		return f.Status.Phase == lotsev1.FleetReady && f.Status.ReadyMembers == 2, nil
	})
	fc := fleetClient(t, mc, fleet)
	replicas := func(name string) (int32, error) {
		d := &appsv1.Deployment{}
		if err := memberClient(t, name).Get(ctx, client.ObjectKey{Namespace: "default", Name: "app"}, d); err != nil {
			return -1, err
		}
		return ptr.Deref(d.Spec.Replicas, 0), nil
	}
	expect := func(what string, a, b int32, bMayBeAnything bool) {
		t.Helper()
		waitFor(t, 3*time.Minute, what, func() (bool, error) {
			ra, err := replicas("rf-a")
			if err != nil {
				return false, err
			}
			rb, errB := replicas("rf-b")
			if bMayBeAnything {
				return ra == a, fmt.Errorf("rf-a %d", ra)
			}
			return ra == a && rb == b, fmt.Errorf("rf-a %d, rf-b %d (%v)", ra, rb, errB)
		})
	}

	labels := map[string]string{"app": "app"}
	if err := fc.Create(ctx, &policyv1.PropagationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "apps/v1", Kind: "Deployment", Name: "app"}},
		Placement: policyv1.Placement{
			ClusterTolerations: []corev1.Toleration{{Key: policyv1.TaintMemberNotReady, Operator: corev1.TolerationOpExists,
				Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](5)}},
			ReplicaScheduling: &policyv1.ReplicaSchedulingStrategy{ReplicaSchedulingType: policyv1.ReplicaSchedulingDivided}},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := fc.Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](10), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/app:1"}}}}}}); err != nil {
		t.Fatal(err)
	}
	// Killed during propagation.
	env.crash()
	t.Log("killed lotse right after the Deployment went into the fleet")
	if err := env.start(); err != nil {
		t.Fatal(err)
	}
	mc = mgmtClient(t)
	expect("5 + 5 after the restart", 5, 5, false)

	// Killed during failover: rf-b stops; lotse dies inside the toleration.
	updateCluster(t, mc, "rf-b", func(c *lotsev1.Cluster) { c.Spec.Hibernation = &lotsev1.HibernationSpec{Enabled: ptr.To(true)} })
	waitFor(t, 2*time.Minute, "rf-b hibernated", func() (bool, error) {
		return getCluster(t, mc, "rf-b").Status.Phase == lotsev1.PhaseHibernated, nil
	})
	time.Sleep(3 * time.Second)
	env.crash()
	t.Log("killed lotse while rf-b's share was failing over")
	time.Sleep(5 * time.Second)
	if err := env.start(); err != nil {
		t.Fatal(err)
	}
	mc = mgmtClient(t)
	expect("all 10 in rf-a", 10, 0, true)
	waitFor(t, time.Minute, "the binding with rf-a only", func() (bool, error) {
		b := &workv1.ResourceBinding{}
		if err := fc.Get(ctx, client.ObjectKey{Namespace: "default", Name: "app-deployment"}, b); err != nil {
			return false, err
		}
		return len(b.Spec.Clusters) == 1 && b.Spec.Clusters[0].Name == "rf-a" && b.Spec.Clusters[0].Replicas == 10, fmt.Errorf("%+v", b.Spec.Clusters)
	})

	// rf-b wakes: its kept copy is taken back into the division, 5 + 5.
	updateCluster(t, mc, "rf-b", func(c *lotsev1.Cluster) { c.Spec.Hibernation.Enabled = ptr.To(false) })
	expect("5 + 5 after rf-b is back", 5, 5, false)
	list := &appsv1.DeploymentList{}
	if err := memberClient(t, "rf-b").List(ctx, list, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Errorf("rf-b has %d Deployments, want 1", len(list.Items))
	}
}
