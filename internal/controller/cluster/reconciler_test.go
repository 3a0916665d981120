package cluster

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controller/controllertest"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/releases"
)

func newTestReconciler(t *testing.T, objs ...client.Object) (*Reconciler, client.Client, *controllertest.FakeBackend, *controllertest.FakeTenants) {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = lotsev1.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(&lotsev1.Cluster{}).Build()
	b, tn := &controllertest.FakeBackend{}, &controllertest.FakeTenants{}
	return &Reconciler{
		Client: c, Backend: b, Releases: controllertest.InstalledStore(t), Tenants: tn,
		EndpointTask: func(controlplane.Spec) string { return controllertest.TaskName },
	}, c, b, tn
}

func testCluster() *lotsev1.Cluster {
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1", Generation: 1}}
	c.Spec.Kubernetes.Version = releases.Default().Version
	c.Spec.Networking.Pods, c.Spec.Networking.Services = "10.244.0.0/16", "10.96.0.0/16"
	return c
}

func reconcile(t *testing.T, r *Reconciler, c client.Client) *lotsev1.Cluster {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "default", Name: "c1"}}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	got := &lotsev1.Cluster{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "c1"}, got); err != nil {
		return nil
	}
	return got
}

func TestReconcileCreates(t *testing.T) {
	r, c, b, tn := newTestReconciler(t, testCluster())

	// The control plane is still starting: the generation is not
	// reconciled yet, so observedGeneration stays where it was.
	got := reconcile(t, r, c)
	if !meta.IsStatusConditionFalse(got.Status.Conditions, lotsev1.ConditionReady) || got.Status.ObservedGeneration != 0 {
		t.Errorf("while starting: observedGeneration %d, conditions %+v", got.Status.ObservedGeneration, got.Status.Conditions)
	}
	if got.Status.Phase != lotsev1.PhaseCreating {
		t.Errorf("phase %q while starting, want Creating", got.Status.Phase)
	}
	if len(got.Finalizers) != 1 || got.Finalizers[0] != lotsev1.ClusterFinalizer {
		t.Errorf("finalizers %v", got.Finalizers)
	}
	// The default maintenance window came with the finalizer.
	if w := got.Spec.Maintenance.TimeWindow; w == nil || w.Begin == "" || w.End == "" {
		t.Errorf("no default maintenance window after the first reconcile: %+v", w)
	}

	b.SetReady(true)
	got = reconcile(t, r, c)
	if !meta.IsStatusConditionTrue(got.Status.Conditions, lotsev1.ConditionReady) || got.Status.ObservedGeneration != 1 || got.Status.Phase != lotsev1.PhaseRunning {
		t.Errorf("when up: phase %q, observedGeneration %d, conditions %+v", got.Status.Phase, got.Status.ObservedGeneration, got.Status.Conditions)
	}
	secret := &corev1.Secret{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: KubeconfigSecretName("c1")}, secret); err != nil || string(secret.Data["kubeconfig"]) != "fake kubeconfig" {
		t.Errorf("kubeconfig secret: %v %q", err, secret.Data["kubeconfig"])
	}
	// The kubernetes Service's endpoints were written into the tenant.
	if _, err := tn.Clientset(refOf(testCluster()).Key()).DiscoveryV1().EndpointSlices("default").Get(context.Background(), "kubernetes", metav1.GetOptions{}); err != nil {
		t.Errorf("tenant EndpointSlice: %v", err)
	}

	// The next reconcile records the creation as done and the
	// operation as a reconcile; after that a converged cluster is
	// reconciled without any write.
	settled := reconcile(t, r, c)
	if op := settled.Status.LastOperation; op == nil || op.Type != lotsev1.OperationReconcile || op.State != lotsev1.StateSucceeded {
		t.Errorf("last operation after creation: %+v", op)
	}
	if again := reconcile(t, r, c); again.ResourceVersion != settled.ResourceVersion {
		t.Errorf("reconciling a converged cluster rewrote it (resourceVersion %s -> %s):\n%+v\n%+v", settled.ResourceVersion, again.ResourceVersion, settled.Status, again.Status)
	}
}

func TestReconcileDeletes(t *testing.T) {
	cl := testCluster()
	cl.Finalizers = []string{lotsev1.ClusterFinalizer}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: KubeconfigSecretName("c1")}}
	r, c, b, tn := newTestReconciler(t, cl, secret)
	if err := c.Delete(context.Background(), cl); err != nil {
		t.Fatal(err)
	}
	if got := reconcile(t, r, c); got != nil {
		t.Errorf("cluster still there after its deletion was reconciled: finalizers %v", got.Finalizers)
	}
	if d := b.Deleted(); len(d) != 1 || d[0] != "clusters/default/c1" {
		t.Errorf("backend deletions %v", d)
	}
	if f := tn.Forgotten(); len(f) != 1 {
		t.Errorf("tenant clients not forgotten: %v", f)
	}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(secret), &corev1.Secret{}); err == nil {
		t.Error("kubeconfig Secret left behind")
	}
}

// The conditions' lastTransitionTime must not move while nothing changes,
// or waits on "newer than the fault" would be fooled.
func TestConditionsKeepTransitionTime(t *testing.T) {
	r, c, b, _ := newTestReconciler(t, testCluster())
	b.SetReady(true)
	first := reconcile(t, r, c)
	time.Sleep(1100 * time.Millisecond) // lastTransitionTime has second resolution
	second := reconcile(t, r, c)
	a := meta.FindStatusCondition(first.Status.Conditions, lotsev1.ConditionReady)
	z := meta.FindStatusCondition(second.Status.Conditions, lotsev1.ConditionReady)
	if a == nil || z == nil || !a.LastTransitionTime.Equal(&z.LastTransitionTime) {
		t.Errorf("Ready's lastTransitionTime moved without a transition: %v -> %v", a, z)
	}
}
