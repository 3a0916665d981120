package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
	"github.com/lotse/lotse/config/crd"
	"github.com/lotse/lotse/internal/controlplane/process/processtest"
	"github.com/lotse/lotse/internal/federation/propagation"
)

// copyOf marks an object as the fleet's copy, as the engine renders it.
func copyOf(obj client.Object) client.Object {
	obj.SetLabels(map[string]string{lotsev1.LabelFleet: "fl"})
	obj.SetAnnotations(map[string]string{propagation.AnnotationFleet: "default/fl", propagation.AnnotationTemplate: obj.GetNamespace() + "/" + obj.GetName()})
	return obj
}

func workOf(t *testing.T, name, conflict string, objs ...client.Object) *workv1.Work {
	t.Helper()
	w := &workv1.Work{ObjectMeta: metav1.ObjectMeta{Namespace: workv1.ExecutionNamespace("m1"), Name: name}, Spec: workv1.WorkSpec{ConflictResolution: conflict}}
	for _, o := range objs {
		raw, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		w.Spec.Workload.Manifests = append(w.Spec.Workload.Manifests, workv1.Manifest{RawExtension: runtime.RawExtension{Raw: raw}})
	}
	return w
}

func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	waitWithin(t, time.Minute, what, cond)
}

func waitWithin(t *testing.T, limit time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The agent against a real API server, which serves as both the fleet (the
// Works, the Lease) and the member (the copies): Works are applied with
// their status reported back, the member's own object is left alone
// without Overwrite, the Lease is renewed, and a deleted Work takes its
// objects with it.
func TestAgent(t *testing.T) {
	kc := processtest.ControlPlane(t)
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, workv1.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	manifests, err := crd.FleetManifests()
	if err != nil {
		t.Fatal(err)
	}
	if err := crd.Apply(ctx, c, manifests); err != nil {
		t.Fatal(err)
	}
	ns := workv1.ExecutionNamespace("m1")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))

	// In the fleet the agent has its Role only (as the manager grants it);
	// in the member, everything.
	must(c.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "agent"}, Rules: FleetRules()}))
	must(c.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "agent"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "agent"},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: workv1.AgentUser("m1")}}}))
	asAgent := rest.CopyConfig(cfg)
	asAgent.Impersonate = rest.ImpersonationConfig{UserName: workv1.AgentUser("m1")}
	a := &Agent{Member: "m1", Fleet: asAgent, Local: cfg, LeaseDuration: 4 * time.Second}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})

	labels := map[string]string{"app": "web"}
	deploy := copyOf(&appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.invalid/web:1"}}}}}})
	config := copyOf(&corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-config"}, Data: map[string]string{"greeting": "hello"}})
	must(c.Create(ctx, workOf(t, "web", "", config, deploy)))

	// Applied, in a namespace the agent brought; the status follows the
	// member's controllers (the Deployment's observed generation).
	var w workv1.Work
	waitFor(t, "the Work applied, with the Deployment's status", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &w); err != nil {
			return false, err
		}
		cond := apimeta.FindStatusCondition(w.Status.Conditions, workv1.ConditionApplied)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.ObservedGeneration != w.Generation || len(w.Status.ManifestStatuses) != 2 {
			return false, fmt.Errorf("status %+v", w.Status)
		}
		d := w.Status.ManifestStatuses[1]
		if d.Identifier.Kind != "Deployment" || d.Status == nil {
			return false, fmt.Errorf("deployment status %+v", d)
		}
		var st appsv1.DeploymentStatus
		if err := json.Unmarshal(d.Status.Raw, &st); err != nil {
			return false, err
		}
		return st.ObservedGeneration == d.Generation && st.Replicas == 2 && d.Health == workv1.HealthUnhealthy,
			fmt.Errorf("deployment status %+v, health %s", st, d.Health)
	})
	if !slices.Contains(w.Finalizers, workv1.WorkFinalizer) {
		t.Errorf("finalizers %v", w.Finalizers)
	}
	cm := &corev1.ConfigMap{}
	must(c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web-config"}, cm))
	if cm.Data["greeting"] != "hello" || cm.Annotations[AnnotationWork] != ns+"/web" {
		t.Errorf("the member's copy: %v %v", cm.Data, cm.Annotations)
	}
	shop := &corev1.Namespace{}
	must(c.Get(ctx, client.ObjectKey{Name: "shop"}, shop))
	if shop.Labels[lotsev1.LabelFleet] != "fl" || shop.Annotations[propagation.AnnotationFleet] != "default/fl" {
		t.Errorf("the namespace the agent made carries no fleet marks: %v %v", shop.Labels, shop.Annotations)
	}

	// The Lease is renewed.
	lease := &coordinationv1.Lease{}
	must(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: workv1.AgentLeaseName}, lease))
	first := lease.Spec.RenewTime.Time
	if ptr.Deref(lease.Spec.HolderIdentity, "") != "m1" {
		t.Errorf("lease holder %v", lease.Spec.HolderIdentity)
	}
	// What the fleet learns of the member from it (no nodes here).
	if a := lease.Annotations; a[workv1.AnnotationNodes] != "0/0" || !strings.HasPrefix(a[workv1.AnnotationKubernetesVersion], "v1.") ||
		!strings.Contains(a[workv1.AnnotationRoom], `"allocatable":{"pods":"0"}`) {
		t.Errorf("lease annotations %v", a)
	}
	waitFor(t, "the lease renewed", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: workv1.AgentLeaseName}, lease); err != nil {
			return false, err
		}
		return lease.Spec.RenewTime.After(first), fmt.Errorf("renewed %v", lease.Spec.RenewTime)
	})

	// The member's own object: refused without Overwrite, taken over with.
	must(c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "theirs"}, Data: map[string]string{"owner": "member"}}))
	theirs := copyOf(&corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "theirs"}, Data: map[string]string{"owner": "fleet"}})
	must(c.Create(ctx, workOf(t, "theirs", "", theirs)))
	waitFor(t, "the conflict reported", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "theirs"}, &w); err != nil {
			return false, err
		}
		cond := apimeta.FindStatusCondition(w.Status.Conditions, workv1.ConditionApplied)
		return cond != nil && cond.Status == metav1.ConditionFalse && strings.Contains(cond.Message, "conflictResolution: Overwrite"), fmt.Errorf("status %+v", w.Status)
	})
	must(c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "theirs"}, cm))
	if cm.Data["owner"] != "member" {
		t.Errorf("the member's own ConfigMap was overwritten: %v", cm.Data)
	}
	w.Spec.ConflictResolution = "Overwrite"
	must(c.Update(ctx, &w))
	waitFor(t, "taken over with Overwrite", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "theirs"}, cm)
		return err == nil && cm.Data["owner"] == "fleet", fmt.Errorf("%v %v", cm.Data, err)
	})

	// A Service's addresses for the fleet's DNS: none without a ready
	// endpoint; then the Ready nodes' addresses (a node port); none again
	// when the node is not Ready. Each change is reported by itself, not
	// at the next resync.
	svc := copyOf(&corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "front"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "front"},
			Ports: []corev1.ServicePort{{Port: 80}}}})
	must(c.Create(ctx, workOf(t, "front", "", svc)))
	must(c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}))
	// The node controller changes the node too: each write retries.
	setNodeReady := func(ready corev1.ConditionStatus) {
		t.Helper()
		must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			node := &corev1.Node{}
			if err := c.Get(ctx, client.ObjectKey{Name: "n1"}, node); err != nil {
				return err
			}
			node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.9.0.1"}}
			node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, Reason: "Test",
				LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
			return c.Status().Update(ctx, node)
		}))
	}
	setNodeReady(corev1.ConditionTrue)
	addresses := func() ([]string, error) {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "front"}, &w); err != nil {
			return nil, err
		}
		cond := apimeta.FindStatusCondition(w.Status.Conditions, workv1.ConditionApplied)
		if cond == nil || cond.Status != metav1.ConditionTrue || len(w.Status.ManifestStatuses) != 1 {
			return nil, fmt.Errorf("status %+v", w.Status)
		}
		return w.Status.ManifestStatuses[0].Addresses, nil
	}
	waitFor(t, "the Service applied, with no addresses (no endpoint)", func() (bool, error) {
		got, err := addresses()
		return err == nil && len(got) == 0, fmt.Errorf("addresses %v, %v", got, err)
	})
	setNodeReady(corev1.ConditionTrue) // a fresh heartbeat: the node controller's grace starts again
	must(c.Create(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "front-1",
		Labels: map[string]string{discoveryv1.LabelServiceName: "front", discoveryv1.LabelManagedBy: "lotse-test"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}}}))
	// Within half the resync: the endpoint's and the node's changes are
	// what makes the agent look again.
	waitWithin(t, resync/2, "the Ready node's address once an endpoint is ready", func() (bool, error) {
		got, err := addresses()
		return err == nil && slices.Equal(got, []string{"10.9.0.1"}), fmt.Errorf("addresses %v, %v", got, err)
	})
	setNodeReady(corev1.ConditionFalse)
	waitWithin(t, resync/2, "no address once the node is not Ready", func() (bool, error) {
		got, err := addresses()
		return err == nil && len(got) == 0, fmt.Errorf("addresses %v, %v", got, err)
	})

	// An agent whose identity is due for renewal stops for it.
	renewing := &Agent{Member: "m1", Fleet: asAgent, Local: cfg, RenewAt: time.Now().Add(2 * time.Second)}
	rctx, rcancel := context.WithTimeout(ctx, time.Minute)
	defer rcancel()
	if err := renewing.Run(rctx); !errors.Is(err, ErrRenew) {
		t.Errorf("an agent due for renewal: %v", err)
	}

	// A deleted Work takes what it applied with it.
	must(c.Delete(ctx, &workv1.Work{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}))
	waitFor(t, "the Work and its objects gone", func() (bool, error) {
		errW := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &workv1.Work{})
		errC := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web-config"}, &corev1.ConfigMap{})
		errD := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, &appsv1.Deployment{})
		return apierrors.IsNotFound(errW) && apierrors.IsNotFound(errC) && apierrors.IsNotFound(errD), fmt.Errorf("work %v, configmap %v, deployment %v", errW, errC, errD)
	})
}
