package maintenance

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/releases"
)

// A catalog with an older patch and a version that expires, which the
// built-in catalog lacks.
var testCatalog = releases.Catalog{
	{Version: "1.37.2", Classification: releases.Supported},
	{Version: "1.36.3", Classification: releases.Supported},
	{Version: "1.36.1", Classification: releases.Supported},
	{Version: "1.35.4", Classification: releases.Deprecated, ExpirationDate: "2027-02-28"},
}

// 2026-12-01 12:30 UTC, inside a 12:00-13:00 window.
var noon = time.Date(2026, 12, 1, 12, 30, 0, 0, time.UTC)

func testCluster(version string, window *lotsev1.MaintenanceTimeWindow, auto bool, annotations map[string]string) *lotsev1.Cluster {
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1", UID: "uid-1", Annotations: annotations}}
	c.Spec.Kubernetes.Version = version
	c.Spec.Maintenance.TimeWindow = window
	c.Spec.Maintenance.AutoUpdate.KubernetesVersion = ptr.To(auto)
	c.Status.KubernetesVersion = version
	return c
}

func run(t *testing.T, c *lotsev1.Cluster, now time.Time) (*lotsev1.Cluster, ctrl.Result) {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = lotsev1.AddToScheme(scheme)
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(c).WithStatusSubresource(&lotsev1.Cluster{}).Build()
	r := &Reconciler{Client: cl, Catalog: testCatalog, Now: func() time.Time { return now }}
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(c)})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	got := &lotsev1.Cluster{}
	if err := cl.Get(context.Background(), client.ObjectKeyFromObject(c), got); err != nil {
		t.Fatal(err)
	}
	return got, res
}

func TestMaintenance(t *testing.T) {
	midday := &lotsev1.MaintenanceTimeWindow{Begin: "120000+0000", End: "130000+0000"}
	evening := &lotsev1.MaintenanceTimeWindow{Begin: "220000+0100", End: "230000+0100"} // 21-22 UTC
	maintain := map[string]string{lotsev1.OperationAnnotation: lotsev1.OperationMaintain}
	later := time.Date(2027, 3, 1, 12, 30, 0, 0, time.UTC)
	tests := []struct {
		name        string
		cluster     *lotsev1.Cluster
		now         time.Time
		wantVersion string
		wantPending []string
		wantActions []string
		wantNext    string
	}{
		{name: "auto patch update in the window", cluster: testCluster("1.36.1", midday, true, nil), now: noon,
			wantVersion: "1.36.3", wantActions: []string{"kubernetes 1.36.1 -> 1.36.3 (autoUpdate.kubernetesVersion)"},
			wantNext: "2026-12-01T12:00:00Z"},
		{name: "outside the window: pending", cluster: testCluster("1.36.1", evening, true, nil), now: noon,
			wantVersion: "1.36.1", wantPending: []string{"kubernetes 1.36.1 -> 1.36.3 (autoUpdate.kubernetesVersion)"},
			wantNext: "2026-12-01T21:00:00Z"},
		{name: "the maintain annotation runs it now", cluster: testCluster("1.36.1", evening, true, maintain), now: noon,
			wantVersion: "1.36.3", wantActions: []string{"kubernetes 1.36.1 -> 1.36.3 (autoUpdate.kubernetesVersion)"}},
		{name: "without autoUpdate nothing changes", cluster: testCluster("1.36.1", midday, false, nil), now: noon,
			wantVersion: "1.36.1"},
		{name: "maintain with nothing to do", cluster: testCluster("1.37.2", evening, true, maintain), now: noon,
			wantVersion: "1.37.2", wantActions: []string{"nothing to do"}},
		{name: "an expired version is forced up in the window", cluster: testCluster("1.35.4", midday, false, nil), now: later,
			wantVersion: "1.36.3", wantActions: []string{"kubernetes 1.35.4 -> 1.36.3 (expired on 2027-02-28)"}},
		{name: "an expired version waits for the window", cluster: testCluster("1.35.4", evening, false, nil), now: later,
			wantVersion: "1.35.4", wantPending: []string{"kubernetes 1.35.4 -> 1.36.3 (expired on 2027-02-28)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := run(t, tt.cluster, tt.now)
			if got.Spec.Kubernetes.Version != tt.wantVersion {
				t.Errorf("version = %s, want %s", got.Spec.Kubernetes.Version, tt.wantVersion)
			}
			st := got.Status.Maintenance
			if st == nil {
				t.Fatal("no status.maintenance")
			}
			if !slices.Equal(st.Pending, tt.wantPending) {
				t.Errorf("pending = %q, want %q", st.Pending, tt.wantPending)
			}
			if !slices.Equal(st.LastRunActions, tt.wantActions) || (len(tt.wantActions) > 0) != (st.LastRunTime != nil) {
				t.Errorf("last run = %v %q, want %q", st.LastRunTime, st.LastRunActions, tt.wantActions)
			}
			if tt.wantNext != "" && st.NextWindowBegin.UTC().Format(time.RFC3339) != tt.wantNext {
				t.Errorf("next window begins %s, want %s", st.NextWindowBegin.UTC().Format(time.RFC3339), tt.wantNext)
			}
			if _, still := got.Annotations[lotsev1.OperationAnnotation]; still {
				t.Error("the operation annotation was not removed")
			}
		})
	}
}

func TestMaintenanceWaitsForRunningUpgrade(t *testing.T) {
	c := testCluster("1.36.1", &lotsev1.MaintenanceTimeWindow{Begin: "120000+0000", End: "130000+0000"}, true, nil)
	c.Status.KubernetesVersion = "1.35.4" // an upgrade to 1.36.1 is still running
	got, res := run(t, c, noon)
	if got.Spec.Kubernetes.Version != "1.36.1" {
		t.Errorf("version changed to %s during a running upgrade", got.Spec.Kubernetes.Version)
	}
	if res.RequeueAfter != time.Minute {
		t.Errorf("requeue after %s, want a minute (to look again while the window lasts)", res.RequeueAfter)
	}
}

func TestDefaultWindowWritten(t *testing.T) {
	got, res := run(t, testCluster("1.37.2", nil, true, nil), noon)
	w := got.Spec.Maintenance.TimeWindow
	if w == nil || !strings.HasSuffix(w.Begin, "0000+0000") || !strings.HasSuffix(w.End, "0000+0000") {
		t.Fatalf("default window = %+v, want a whole hour in UTC", w)
	}
	again, _ := run(t, testCluster("1.37.2", nil, true, nil), noon.Add(48*time.Hour))
	if *again.Spec.Maintenance.TimeWindow != *w {
		t.Errorf("the default window changed: %+v then %+v", w, again.Spec.Maintenance.TimeWindow)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > 24*time.Hour+time.Second {
		t.Errorf("requeue after %s, want the time until the next window", res.RequeueAfter)
	}
}
