package quota

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

func i32(v int32) *int32 { return &v }

func cluster(name string, ha bool, pools ...[2]int32) *lotsev1.Cluster {
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "project-acme", Name: name}}
	c.Spec.ControlPlane.HighAvailability = ha
	for i, p := range pools {
		c.Spec.Workers = append(c.Spec.Workers, lotsev1.WorkerPool{Name: string(rune('a' + i)), Minimum: p[0], Maximum: p[1]})
	}
	return c
}

func TestCost(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    *lotsev1.Cluster
		want lotsev1.ProjectUsage
	}{
		{"workerless", cluster("a", false), lotsev1.ProjectUsage{Clusters: 1, ControlPlaneReplicas: 1}},
		{"highly available", cluster("a", true), lotsev1.ProjectUsage{Clusters: 1, ControlPlaneReplicas: 3}},
		{"pools count their maximum", cluster("a", false, [2]int32{1, 5}, [2]int32{2, 2}), lotsev1.ProjectUsage{Clusters: 1, Nodes: 7, ControlPlaneReplicas: 1}},
		{"a minimum above the maximum counts", cluster("a", false, [2]int32{4, 0}), lotsev1.ProjectUsage{Clusters: 1, Nodes: 4, ControlPlaneReplicas: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Cost(tc.c); got != tc.want {
				t.Fatalf("Cost = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	p := &lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: "acme"}}
	p.Spec.Quota = &lotsev1.ProjectQuota{Clusters: i32(2), Nodes: i32(4), ControlPlaneReplicas: i32(4)}
	one := lotsev1.ProjectUsage{Clusters: 1, ControlPlaneReplicas: 1}
	for _, tc := range []struct {
		name                  string
		before, after, others lotsev1.ProjectUsage
		want                  string // "" admits; else a part of the reason
	}{
		{"fits", lotsev1.ProjectUsage{}, one, one, ""},
		{"one cluster too many", lotsev1.ProjectUsage{}, one, lotsev1.ProjectUsage{Clusters: 2, ControlPlaneReplicas: 2}, "spec.quota.clusters: 3 used of 2"},
		{"too many nodes", lotsev1.ProjectUsage{}, lotsev1.ProjectUsage{Clusters: 1, Nodes: 5, ControlPlaneReplicas: 1}, lotsev1.ProjectUsage{}, "spec.quota.nodes: 5 used of 4"},
		{"HA past the replicas", one, lotsev1.ProjectUsage{Clusters: 1, ControlPlaneReplicas: 3}, lotsev1.ProjectUsage{Clusters: 1, ControlPlaneReplicas: 3}, "spec.quota.controlPlaneReplicas: 6 used of 4"},
		{"shrinking above a lowered quota is admitted", lotsev1.ProjectUsage{Clusters: 1, Nodes: 9, ControlPlaneReplicas: 1}, lotsev1.ProjectUsage{Clusters: 1, Nodes: 6, ControlPlaneReplicas: 1}, lotsev1.ProjectUsage{Clusters: 3}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(p, "new", tc.before, tc.after, tc.others, []string{"b", "a"})
			if tc.want == "" && got != "" {
				t.Fatalf("refused: %s", got)
			}
			if tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("reason %q does not say %q", got, tc.want)
			}
			if tc.want != "" && (!strings.Contains(got, "project acme") || !strings.Contains(got, "a, b")) {
				t.Fatalf("reason %q names neither the project nor its clusters", got)
			}
		})
	}
	if got := Decide(&lotsev1.Project{}, "x", lotsev1.ProjectUsage{}, lotsev1.ProjectUsage{Clusters: 100}, lotsev1.ProjectUsage{}, nil); got != "" {
		t.Fatalf("a project without quota refused: %s", got)
	}
}

func scheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := lotsev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func project(clusters int32) (*lotsev1.Project, *corev1.Namespace) {
	p := &lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: "acme"}}
	p.Spec.Quota = &lotsev1.ProjectQuota{Clusters: i32(clusters)}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "project-acme", Labels: map[string]string{lotsev1.LabelProject: "acme"}}}
	return p, ns
}

func request(t *testing.T, op admissionv1.Operation, obj, old client.Object, dryRun bool) admission.Request {
	t.Helper()
	raw := func(o client.Object) runtime.RawExtension {
		if o == nil {
			return runtime.RawExtension{}
		}
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: b}
	}
	o := obj
	if o == nil {
		o = old
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: op, Namespace: o.GetNamespace(), Name: o.GetName(), Object: raw(obj), OldObject: raw(old), DryRun: &dryRun,
	}}
}

// TestAdmitterCountsWhatItJustAdmitted: creates that the API has not
// stored yet still count, so concurrent creates cannot pass a quota
// together; a dry run reserves nothing; a reservation lapses.
func TestAdmitterCountsWhatItJustAdmitted(t *testing.T) {
	s := scheme(t)
	p, ns := project(2)
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(p, ns, cluster("existing", false)).Build()
	now := time.Now()
	a := &Admitter{Reader: c, Scheme: s, Now: func() time.Time { return now }}
	ctx := context.Background()

	if r := a.admitCluster(ctx, request(t, admissionv1.Create, cluster("dry", false), nil, true)); !r.Allowed {
		t.Fatalf("dry run refused: %v", r.Result)
	}
	if r := a.admitCluster(ctx, request(t, admissionv1.Create, cluster("second", false), nil, false)); !r.Allowed {
		t.Fatalf("second cluster refused: %v", r.Result)
	}
	// "second" is not in the API yet: a third must still be refused.
	r := a.admitCluster(ctx, request(t, admissionv1.Create, cluster("third", false), nil, false))
	if r.Allowed || !strings.Contains(r.Result.Message, "spec.quota.clusters: 3 used of 2") || !strings.Contains(r.Result.Message, "existing, second") {
		t.Fatalf("third cluster: allowed=%t %v", r.Allowed, r.Result)
	}
	// A retry of the admitted create is the same cluster, not another.
	if r := a.admitCluster(ctx, request(t, admissionv1.Create, cluster("second", false), nil, false)); !r.Allowed {
		t.Fatalf("repeated create of the reserved cluster refused: %v", r.Result)
	}
	// A create a later admission step refused never shows up: its
	// reservation lapses.
	now = now.Add(reservationTTL + time.Second)
	if r := a.admitCluster(ctx, request(t, admissionv1.Create, cluster("third", false), nil, false)); !r.Allowed {
		t.Fatalf("third cluster refused after the reservation lapsed: %v", r.Result)
	}
}

func TestAdmitterConcurrentCreates(t *testing.T) {
	s := scheme(t)
	p, ns := project(3)
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(p, ns).Build()
	a := &Admitter{Reader: c, Scheme: s}
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := a.admitCluster(context.Background(), request(t, admissionv1.Create, cluster(string(rune('a'+i)), false), nil, false))
			mu.Lock()
			defer mu.Unlock()
			if r.Allowed {
				allowed++
			}
		}()
	}
	wg.Wait()
	if allowed != 3 {
		t.Fatalf("%d of 10 concurrent creates admitted under a quota of 3 clusters", allowed)
	}
}

// TestAdmitterGenerateName: creates that let the API server make up the
// name count each on its own.
func TestAdmitterGenerateName(t *testing.T) {
	s := scheme(t)
	p, ns := project(1)
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(p, ns).Build()
	a := &Admitter{Reader: c, Scheme: s}
	allowed := 0
	for i := range 3 {
		cl := cluster("", false)
		cl.GenerateName = "gen-"
		req := request(t, admissionv1.Create, cl, nil, false)
		req.Name = ""
		req.UID = types.UID(fmt.Sprintf("uid-%d", i))
		if r := a.admitCluster(context.Background(), req); r.Allowed {
			allowed++
		}
	}
	if allowed != 1 {
		t.Fatalf("%d of 3 generateName creates admitted under a quota of 1 cluster", allowed)
	}
}

func TestAdmitterUpdates(t *testing.T) {
	s := scheme(t)
	p, ns := project(5)
	p.Spec.Quota.Nodes = i32(4)
	old := cluster("a", false, [2]int32{1, 3})
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(p, ns, old).Build()
	a := &Admitter{Reader: c, Scheme: s}
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		new   *lotsev1.Cluster
		allow bool
	}{
		{"grow within the quota", cluster("a", false, [2]int32{1, 4}), true},
		{"grow past the quota", cluster("a", false, [2]int32{1, 5}), false},
		{"a second pool past the quota", cluster("a", false, [2]int32{1, 3}, [2]int32{2, 2}), false},
		{"shrink", cluster("a", false, [2]int32{1, 2}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.admitCluster(ctx, request(t, admissionv1.Update, tc.new, old, true))
			if r.Allowed != tc.allow {
				t.Fatalf("allowed=%t, want %t: %v", r.Allowed, tc.allow, r.Result)
			}
		})
	}
}

func TestAdmitterOutsideProjects(t *testing.T) {
	s := scheme(t)
	p, _ := project(0)
	plain := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	orphan := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "project-gone", Labels: map[string]string{lotsev1.LabelProject: "gone"}}}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(p, plain, orphan).Build()
	a := &Admitter{Reader: c, Scheme: s}
	ctx := context.Background()
	in := func(ns string) *lotsev1.Cluster { cl := cluster("x", false); cl.Namespace = ns; return cl }
	if r := a.admitCluster(ctx, request(t, admissionv1.Create, in("default"), nil, true)); !r.Allowed {
		t.Fatalf("a cluster outside projects refused: %v", r.Result)
	}
	if r := a.admitCluster(ctx, request(t, admissionv1.Create, in("project-gone"), nil, true)); r.Allowed || !strings.Contains(r.Result.Message, "no longer exists") {
		t.Fatalf("a cluster in a deleted project's namespace: allowed=%t %v", r.Allowed, r.Result)
	}
}

func TestAdmitterProjectDelete(t *testing.T) {
	s := scheme(t)
	p, ns := project(5)
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(p, ns, cluster("web", false)).Build()
	a := &Admitter{Reader: c, Scheme: s}
	r := a.admitProjectDelete(context.Background(), request(t, admissionv1.Delete, nil, p, false))
	if r.Allowed || !strings.Contains(r.Result.Message, "still has clusters (web)") {
		t.Fatalf("delete of a project with a cluster: allowed=%t %v", r.Allowed, r.Result)
	}
	empty := &lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: "empty"}}
	if r := a.admitProjectDelete(context.Background(), request(t, admissionv1.Delete, nil, empty, false)); !r.Allowed {
		t.Fatalf("delete of an empty project refused: %v", r.Result)
	}
}
