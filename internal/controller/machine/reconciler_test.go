package machine

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controller/controllertest"
	"github.com/lotse/lotse/internal/releases"
)

func setup(t *testing.T) (*Reconciler, client.Client, *controllertest.FakeProvider, *kubefake.Clientset) {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = lotsev1.AddToScheme(scheme)
	cl := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1"}}
	cl.Spec.Networking.Pods, cl.Spec.Networking.Services = "10.244.0.0/16", "10.96.0.0/16"
	cl.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, Labels: map[string]lotsev1.LabelValue{"tier": "web"},
		Taints: []lotsev1.Taint{{Key: "dedicated", Value: "web", Effect: "NoSchedule"}}}}
	m := &lotsev1.Machine{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1-w-abc", Generation: 1},
		Spec: lotsev1.MachineSpec{Cluster: "c1", Pool: "w", Version: releases.Default().Version, Index: 3}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cl, m).WithStatusSubresource(&lotsev1.Machine{}, &lotsev1.Cluster{}).Build()
	p, tenants := &controllertest.FakeProvider{}, &controllertest.FakeTenants{}
	cs := tenants.Clientset(clusterref.Ref{Namespace: "default", Name: "c1"}.Key())
	r := &Reconciler{Client: c, Backend: &controllertest.FakeBackend{}, Provider: p, Releases: controllertest.InstalledStore(t), Tenants: tenants,
		Images: func(context.Context, string) (string, []string, bool, error) {
			return "registry.lotse.local/pause:3.10.2", []string{"/images/pause.tar"}, true, nil
		}}
	return r, c, p, cs
}

func reconcileMachine(t *testing.T, r *Reconciler, c client.Client) *lotsev1.Machine {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "default", Name: "c1-w-abc"}}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	m := &lotsev1.Machine{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "c1-w-abc"}, m); err != nil {
		return nil
	}
	return m
}

func TestMachineJoins(t *testing.T) {
	ctx := context.Background()
	r, c, p, cs := setup(t)

	// No node yet: the provider is asked for the machine with a bootstrap
	// token, the pool's labels and taints, and the cluster's ranges.
	m := reconcileMachine(t, r, c)
	ensured := p.Ensured()
	if len(ensured) != 1 {
		t.Fatalf("provider asked %d times", len(ensured))
	}
	s := ensured[0]
	if s.Cluster != (clusterref.Ref{Namespace: "default", Name: "c1"}) || s.Index != 3 || s.NodesCIDR != "10.250.0.0/24" ||
		s.APIServer != "https://10.250.0.1:6443" || s.ClusterCIDR != "10.244.0.0/16" || s.ServiceCIDR != "10.96.0.0/16" || s.Egress || !s.BridgeCNI {
		t.Errorf("machine spec %+v", s)
	}
	if s.Labels["tier"] != "web" || s.Labels[lotsev1.LabelPool] != "w" || len(s.Taints) != 1 || s.Taints[0].Key != "dedicated" {
		t.Errorf("labels %v taints %v", s.Labels, s.Taints)
	}
	if s.BootstrapToken == "" {
		t.Error("a machine without a node got no bootstrap token")
	}
	if _, err := cs.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-"+bootstrapTokenID(m.Name), metav1.GetOptions{}); err != nil {
		t.Errorf("bootstrap token secret: %v", err)
	}
	if m.Status.Phase != lotsev1.MachineProvisioning || meta.IsStatusConditionTrue(m.Status.Conditions, "NodeReady") || m.Status.ObservedGeneration != 1 {
		t.Errorf("before the node registered: phase %q, observedGeneration %d, conditions %+v", m.Status.Phase, m.Status.ObservedGeneration, m.Status.Conditions)
	}

	// The node registered and is Ready, but the kubelet has no serving
	// certificate yet: not Ready (exec and logs would fail).
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: m.Name}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	m = reconcileMachine(t, r, c)
	if meta.IsStatusConditionTrue(m.Status.Conditions, "NodeReady") {
		t.Error("Ready without the kubelet's serving certificate")
	}
	p.SetServingCertificate(true)
	m = reconcileMachine(t, r, c)
	if !meta.IsStatusConditionTrue(m.Status.Conditions, "NodeReady") || m.Status.Phase != lotsev1.MachineRunning {
		t.Errorf("phase %q, conditions %+v", m.Status.Phase, m.Status.Conditions)
	}
	// The token has done its job.
	if _, err := cs.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-"+bootstrapTokenID(m.Name), metav1.GetOptions{}); err == nil {
		t.Error("bootstrap token left after the node became Ready")
	}
	if all := p.Ensured(); all[len(all)-1].BootstrapToken != "" {
		t.Error("a Ready node's machine still got a bootstrap token")
	}
	if got, _ := cs.CoreV1().Nodes().Get(ctx, m.Name, metav1.GetOptions{}); got.Labels["tier"] != "web" {
		t.Errorf("node labels %v", got.Labels)
	}
}

func TestMachineDeleted(t *testing.T) {
	ctx := context.Background()
	r, c, p, cs := setup(t)
	reconcileMachine(t, r, c) // adds the finalizer
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "c1-w-abc"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The cluster goes too: no draining, straight to removal.
	if err := c.Delete(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, &lotsev1.Machine{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1-w-abc"}}); err != nil {
		t.Fatal(err)
	}
	if m := reconcileMachine(t, r, c); m != nil {
		t.Errorf("machine still there: finalizers %v", m.Finalizers)
	}
	if d := p.DeletedMachines(); len(d) != 1 || d[0].Name != "c1-w-abc" || d[0].Index != 3 || d[0].Cluster.Name != "c1" {
		t.Errorf("provider deletions %+v", d)
	}
	if _, err := cs.CoreV1().Nodes().Get(ctx, "c1-w-abc", metav1.GetOptions{}); err == nil {
		t.Error("node object left behind")
	}
}

func TestMachineStoppedAndStarted(t *testing.T) {
	ctx := context.Background()
	r, c, p, cs := setup(t)
	p.SetServingCertificate(true)
	reconcileMachine(t, r, c)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "c1-w-abc"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := reconcileMachine(t, r, c); m.Status.Phase != lotsev1.MachineRunning {
		t.Fatalf("phase %q before the stop", m.Status.Phase)
	}

	setStopped := func(stopped bool) {
		t.Helper()
		m := &lotsev1.Machine{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "c1-w-abc"}, m); err != nil {
			t.Fatal(err)
		}
		m.Spec.Stopped = stopped
		m.Generation++
		if err := c.Update(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	setStopped(true)
	ensuredBefore := len(p.Ensured())
	m := reconcileMachine(t, r, c)
	if stopped := p.StoppedMachines(); len(stopped) != 1 || stopped[0].Name != "c1-w-abc" || stopped[0].Index != 3 {
		t.Errorf("provider stops %+v", stopped)
	}
	if len(p.Ensured()) != ensuredBefore {
		t.Error("a stopped machine was ensured (started) again")
	}
	cond := meta.FindStatusCondition(m.Status.Conditions, "NodeReady")
	if m.Status.Phase != lotsev1.MachineStopped || cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != "MachineStopped" || m.Status.ObservedGeneration != m.Generation {
		t.Errorf("stopped machine: phase %q, observedGeneration %d of %d, NodeReady %+v", m.Status.Phase, m.Status.ObservedGeneration, m.Generation, cond)
	}

	// Started again: ensured, and Running once its node is Ready.
	setStopped(false)
	m = reconcileMachine(t, r, c)
	if len(p.Ensured()) != ensuredBefore+1 {
		t.Error("the machine was not started again")
	}
	if m.Status.Phase != lotsev1.MachineRunning {
		t.Errorf("phase %q after the start", m.Status.Phase)
	}
}

func TestStoppedMachineDeletedWithoutDraining(t *testing.T) {
	ctx := context.Background()
	r, c, p, cs := setup(t)
	reconcileMachine(t, r, c)
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "c1-w-abc"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A pod on the node that no kubelet will ever end: a drain would wait
	// for it until the drain timeout.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"}, Spec: corev1.PodSpec{NodeName: "c1-w-abc"}}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	m := &lotsev1.Machine{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "c1-w-abc"}, m); err != nil {
		t.Fatal(err)
	}
	m.Spec.Stopped = true
	if err := c.Update(ctx, m); err != nil {
		t.Fatal(err)
	}
	reconcileMachine(t, r, c)
	if err := c.Delete(ctx, m); err != nil {
		t.Fatal(err)
	}
	if m := reconcileMachine(t, r, c); m != nil {
		t.Errorf("stopped machine not removed at once: phase %q, conditions %+v", m.Status.Phase, m.Status.Conditions)
	}
	if d := p.DeletedMachines(); len(d) != 1 {
		t.Errorf("provider deletions %+v", d)
	}
}
