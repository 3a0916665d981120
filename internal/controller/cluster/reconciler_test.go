package cluster

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/tasks"
)

// fakeBackend is a control-plane backend in memory: its one task is done
// when ready is true; it records deletions.
type fakeBackend struct {
	mu      sync.Mutex
	ready   bool
	deleted []string
}

func (f *fakeBackend) Tasks(spec controlplane.Spec) []tasks.Task {
	return []tasks.Task{{Name: "control-plane", Run: func(context.Context) (bool, string, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.ready, "starting", nil
	}}}
}

func (f *fakeBackend) Status(context.Context, controlplane.Spec) controlplane.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return controlplane.Status{Endpoint: "https://127.0.0.1:6443", APIServerAvailable: f.ready,
		Components: []controlplane.ComponentHealth{{Name: "kube-apiserver-0", Healthy: f.ready}}}
}

func (f *fakeBackend) AdminKubeconfig(controlplane.Spec) ([]byte, error) {
	return []byte("fake kubeconfig"), nil
}
func (f *fakeBackend) TunnelCredentials(controlplane.Spec) (controlplane.TunnelCredentials, error) {
	return controlplane.TunnelCredentials{}, nil
}
func (f *fakeBackend) NodeAccess(controlplane.Spec) (controlplane.NodeAccess, error) {
	return controlplane.NodeAccess{NodesCIDR: "10.250.0.0/24", Gateway: "10.250.0.1", APIServer: "https://10.250.0.1:6443", APIPort: 6443}, nil
}
func (f *fakeBackend) EnsureNodeAccess(s controlplane.Spec) (controlplane.NodeAccess, error) {
	return f.NodeAccess(s)
}
func (f *fakeBackend) PKI(string) pki.ClusterPKI { return pki.ClusterPKI{} }
func (f *fakeBackend) Delete(_ context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, key)
	return nil
}
func (f *fakeBackend) Stop(context.Context, string) error { return nil }
func (f *fakeBackend) RestartComponent(context.Context, controlplane.Spec, string) error {
	return nil
}
func (f *fakeBackend) Snapshot(context.Context, controlplane.Spec, string) error { return nil }

// fakeTenants hands out one fake clientset per cluster.
type fakeTenants struct {
	mu  sync.Mutex
	cs  map[string]*kubefake.Clientset
	got []string // forgotten keys
}

func (f *fakeTenants) For(key string, _ []byte) (kubernetes.Interface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cs == nil {
		f.cs = map[string]*kubefake.Clientset{}
	}
	if f.cs[key] == nil {
		f.cs[key] = kubefake.NewClientset()
	}
	return f.cs[key], nil
}
func (f *fakeTenants) Dynamic(string, []byte) (dynamic.Interface, error) { return nil, nil }
func (f *fakeTenants) Informers(string, []byte) (informers.SharedInformerFactory, context.Context, error) {
	return nil, nil, nil
}
func (f *fakeTenants) Forget(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, key)
}

// installedStore is a release store in which the default release counts
// as built (stamp files only).
func installedStore(t *testing.T) *releases.Store {
	t.Helper()
	s := releases.NewStore(t.TempDir())
	r := releases.Default()
	for _, d := range []string{s.KubernetesBinDir(r.Version), s.EtcdBinDir(r.Etcd), s.KonnectivityBinDir(r.Konnectivity)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, ".complete"), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func newTestReconciler(t *testing.T, objs ...client.Object) (*Reconciler, client.Client, *fakeBackend, *fakeTenants) {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = lotsev1.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(&lotsev1.Cluster{}).Build()
	b, tn := &fakeBackend{}, &fakeTenants{}
	return &Reconciler{
		Client: c, Backend: b, Releases: installedStore(t), Tenants: tn,
		EndpointTask: func(controlplane.Spec) string { return "control-plane" },
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

	b.mu.Lock()
	b.ready = true
	b.mu.Unlock()
	got = reconcile(t, r, c)
	if !meta.IsStatusConditionTrue(got.Status.Conditions, lotsev1.ConditionReady) || got.Status.ObservedGeneration != 1 || got.Status.Phase != lotsev1.PhaseRunning {
		t.Errorf("when up: phase %q, observedGeneration %d, conditions %+v", got.Status.Phase, got.Status.ObservedGeneration, got.Status.Conditions)
	}
	secret := &corev1.Secret{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: KubeconfigSecretName("c1")}, secret); err != nil || string(secret.Data["kubeconfig"]) != "fake kubeconfig" {
		t.Errorf("kubeconfig secret: %v %q", err, secret.Data["kubeconfig"])
	}
	// The kubernetes Service's endpoints were written into the tenant.
	cs, _ := tn.For(refOf(testCluster()).Key(), nil)
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Get(context.Background(), "kubernetes", metav1.GetOptions{}); err != nil {
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
	if len(b.deleted) != 1 || b.deleted[0] != "clusters/default/c1" {
		t.Errorf("backend deletions %v", b.deleted)
	}
	if len(tn.got) != 1 {
		t.Errorf("tenant clients not forgotten: %v", tn.got)
	}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(secret), &corev1.Secret{}); err == nil {
		t.Error("kubeconfig Secret left behind")
	}
}

// The conditions' lastTransitionTime must not move while nothing changes,
// or waits on "newer than the fault" would be fooled.
func TestConditionsKeepTransitionTime(t *testing.T) {
	r, c, b, _ := newTestReconciler(t, testCluster())
	b.ready = true
	first := reconcile(t, r, c)
	time.Sleep(1100 * time.Millisecond) // lastTransitionTime has second resolution
	second := reconcile(t, r, c)
	a := meta.FindStatusCondition(first.Status.Conditions, lotsev1.ConditionReady)
	z := meta.FindStatusCondition(second.Status.Conditions, lotsev1.ConditionReady)
	if a == nil || z == nil || !a.LastTransitionTime.Equal(&z.LastTransitionTime) {
		t.Errorf("Ready's lastTransitionTime moved without a transition: %v -> %v", a, z)
	}
}
