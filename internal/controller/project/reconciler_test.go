package project

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

func testScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := lotsev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func acme() *lotsev1.Project {
	two := int32(2)
	return &lotsev1.Project{
		ObjectMeta: metav1.ObjectMeta{Name: "acme", UID: "uid-acme", Generation: 1},
		Spec: lotsev1.ProjectSpec{
			Members: []lotsev1.ProjectMember{
				{Kind: "User", Name: "alice", Role: lotsev1.RoleOwner},
				{Kind: "Group", Name: "ops", Role: lotsev1.RoleViewer},
				{Kind: "ServiceAccount", Name: "ci:deployer", Role: lotsev1.RoleAdmin},
			},
			Quota: &lotsev1.ProjectQuota{Clusters: &two},
		},
	}
}

func reconcileProject(t *testing.T, r *Reconciler) {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: "acme"}}); err != nil {
		t.Fatal(err)
	}
}

func TestReconcileCreatesNamespaceAndBindings(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(acme()).WithStatusSubresource(&lotsev1.Project{}).Build()
	r := &Reconciler{Client: c, Recorder: events.NewFakeRecorder(10)}
	reconcileProject(t, r)
	reconcileProject(t, r) // idempotent
	ctx := context.Background()

	ns := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: "project-acme"}, ns); err != nil {
		t.Fatal(err)
	}
	if ns.Labels[lotsev1.LabelProject] != "acme" || !metav1.IsControlledBy(ns, acme()) {
		t.Fatalf("namespace labels %v owners %v", ns.Labels, ns.OwnerReferences)
	}
	for _, tc := range []struct {
		role lotsev1.ProjectRole
		want rbacv1.Subject
	}{
		{lotsev1.RoleOwner, rbacv1.Subject{Kind: "User", APIGroup: rbacv1.GroupName, Name: "alice"}},
		{lotsev1.RoleViewer, rbacv1.Subject{Kind: "Group", APIGroup: rbacv1.GroupName, Name: "ops"}},
		{lotsev1.RoleAdmin, rbacv1.Subject{Kind: "ServiceAccount", Namespace: "ci", Name: "deployer"}},
	} {
		rb := &rbacv1.RoleBinding{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "project-acme", Name: RoleName(tc.role)}, rb); err != nil {
			t.Fatal(err)
		}
		if len(rb.Subjects) != 1 || rb.Subjects[0] != tc.want || rb.RoleRef.Name != RoleName(tc.role) {
			t.Fatalf("binding of %s: subjects %v role %v", tc.role, rb.Subjects, rb.RoleRef)
		}
	}
	owner := &rbacv1.ClusterRoleBinding{}
	if err := c.Get(ctx, client.ObjectKey{Name: "lotse:project:acme:owner"}, owner); err != nil {
		t.Fatal(err)
	}
	if len(owner.Subjects) != 1 || owner.Subjects[0].Name != "alice" {
		t.Fatalf("owner binding subjects %v", owner.Subjects)
	}
	member := &rbacv1.ClusterRoleBinding{}
	if err := c.Get(ctx, client.ObjectKey{Name: "lotse:project:acme:member"}, member); err != nil {
		t.Fatal(err)
	}
	if len(member.Subjects) != 3 {
		t.Fatalf("member binding subjects %v", member.Subjects)
	}
	role := &rbacv1.ClusterRole{}
	if err := c.Get(ctx, client.ObjectKey{Name: "lotse:project:acme:member"}, role); err != nil {
		t.Fatal(err)
	}
	if got := role.Rules[0].ResourceNames; len(got) != 1 || got[0] != "acme" {
		t.Fatalf("member role reaches projects %v", got)
	}

	// A member removed from the spec loses the binding; a binding edited
	// by hand comes back.
	p := &lotsev1.Project{}
	if err := c.Get(ctx, client.ObjectKey{Name: "acme"}, p); err != nil {
		t.Fatal(err)
	}
	p.Spec.Members = p.Spec.Members[:1]
	if err := c.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	owners := &rbacv1.RoleBinding{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "project-acme", Name: RoleName(lotsev1.RoleOwner)}, owners); err != nil {
		t.Fatal(err)
	}
	owners.Subjects = append(owners.Subjects, rbacv1.Subject{Kind: "User", APIGroup: rbacv1.GroupName, Name: "mallory"})
	if err := c.Update(ctx, owners); err != nil {
		t.Fatal(err)
	}
	reconcileProject(t, r)
	if err := c.Get(ctx, client.ObjectKey{Namespace: "project-acme", Name: RoleName(lotsev1.RoleOwner)}, owners); err != nil {
		t.Fatal(err)
	}
	if len(owners.Subjects) != 1 || owners.Subjects[0].Name != "alice" {
		t.Fatalf("owner binding after a hand edit: %v", owners.Subjects)
	}
	viewers := &rbacv1.RoleBinding{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "project-acme", Name: RoleName(lotsev1.RoleViewer)}, viewers); err != nil {
		t.Fatal(err)
	}
	if len(viewers.Subjects) != 0 {
		t.Fatalf("removed viewer still bound: %v", viewers.Subjects)
	}
}

func TestReconcileReportsUsageAndQuota(t *testing.T) {
	var objs []client.Object
	objs = append(objs, acme())
	for _, name := range []string{"a", "b", "c"} {
		objs = append(objs, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "project-acme", Name: name}})
	}
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).WithStatusSubresource(&lotsev1.Project{}).Build()
	r := &Reconciler{Client: c, Recorder: events.NewFakeRecorder(10)}
	reconcileProject(t, r)
	p := &lotsev1.Project{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "acme"}, p); err != nil {
		t.Fatal(err)
	}
	if p.Status.Usage.Clusters != 3 || p.Status.Usage.ControlPlaneReplicas != 3 || p.Status.Namespace != "project-acme" {
		t.Fatalf("status %+v", p.Status)
	}
	cond := meta.FindStatusCondition(p.Status.Conditions, lotsev1.ConditionQuotaExceeded)
	if cond == nil || cond.Status != metav1.ConditionTrue || !strings.Contains(cond.Message, "spec.quota.clusters: 3 used of 2") {
		t.Fatalf("QuotaExceeded: %+v", cond)
	}
	if !meta.IsStatusConditionTrue(p.Status.Conditions, lotsev1.ConditionProjectReady) || p.Status.ObservedGeneration != 1 {
		t.Fatalf("Ready: %+v, observed %d", p.Status.Conditions, p.Status.ObservedGeneration)
	}
}

func TestReconcileRefusesForeignNamespace(t *testing.T) {
	foreign := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "project-acme"}}
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(acme(), foreign).WithStatusSubresource(&lotsev1.Project{}).Build()
	r := &Reconciler{Client: c, Recorder: events.NewFakeRecorder(10)}
	reconcileProject(t, r)
	p := &lotsev1.Project{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "acme"}, p); err != nil {
		t.Fatal(err)
	}
	cond := meta.FindStatusCondition(p.Status.Conditions, lotsev1.ConditionProjectReady)
	if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != "NamespaceTaken" {
		t.Fatalf("Ready: %+v", cond)
	}
	rb := &rbacv1.RoleBinding{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "project-acme", Name: RoleName(lotsev1.RoleOwner)}, rb); !apierrors.IsNotFound(err) {
		t.Fatalf("bindings written into a namespace not the project's: %v", err)
	}
}

func TestDeletedProjectWaitsForItsClusters(t *testing.T) {
	p := acme()
	p.Finalizers = []string{lotsev1.ProjectFinalizer}
	now := metav1.Now()
	p.DeletionTimestamp = &now
	cl := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "project-acme", Name: "web"}}
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(p, cl).WithStatusSubresource(&lotsev1.Project{}).Build()
	r := &Reconciler{Client: c, Recorder: events.NewFakeRecorder(10)}
	reconcileProject(t, r)
	got := &lotsev1.Project{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "acme"}, got); err != nil {
		t.Fatalf("project gone while it has a cluster: %v", err)
	}
	cond := meta.FindStatusCondition(got.Status.Conditions, lotsev1.ConditionProjectReady)
	if cond == nil || cond.Reason != "Deleting" || !strings.Contains(cond.Message, "web") {
		t.Fatalf("Ready: %+v", cond)
	}
	if err := c.Delete(context.Background(), cl); err != nil {
		t.Fatal(err)
	}
	reconcileProject(t, r)
	if err := c.Get(context.Background(), client.ObjectKey{Name: "acme"}, got); !apierrors.IsNotFound(err) {
		t.Fatalf("project kept after its last cluster went: %v", err)
	}
}
