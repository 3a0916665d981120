package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/maintenance"
)

// TestMaintenance: a cluster created without a window gets one (an hour
// picked from its UID, written into its spec), its status shows the next
// window, and `lotse cluster maintain` runs maintenance at once and clears
// the annotation. (What maintenance changes is tested against a catalog
// with older patches in the controller's unit tests; the built-in catalog
// holds only the newest patch of each minor.)
func TestMaintenance(t *testing.T) {
	const name = "maint"
	parallel(t)
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "3m") })
	diagnoseOnFailure(t, name)

	var cl *lotsev1.Cluster
	waitFor(t, time.Minute, "a default maintenance window and status.maintenance", func() (bool, error) {
		cl = getCluster(t, mc, name)
		return cl.Spec.Maintenance.TimeWindow != nil && cl.Status.Maintenance != nil, nil
	})
	w := cl.Spec.Maintenance.TimeWindow
	wantBegin, wantEnd := maintenance.Default(string(cl.UID))
	if w.Begin != wantBegin || w.End != wantEnd {
		t.Errorf("default window %s-%s, want %s-%s", w.Begin, w.End, wantBegin, wantEnd)
	}
	if cl.Spec.Maintenance.AutoUpdate.KubernetesVersion == nil || !*cl.Spec.Maintenance.AutoUpdate.KubernetesVersion {
		t.Error("spec.maintenance.autoUpdate.kubernetesVersion does not default to true")
	}
	window, err := maintenance.Parse(w.Begin, w.End)
	if err != nil {
		t.Fatal(err)
	}
	begin, end := window.Next(time.Now())
	if st := cl.Status.Maintenance; !st.NextWindowBegin.Time.Equal(begin) || !st.NextWindowEnd.Time.Equal(end) {
		t.Errorf("status says the next window is %s to %s, want %s to %s", st.NextWindowBegin, st.NextWindowEnd, begin, end)
	}
	if len(cl.Status.Maintenance.Pending) != 0 {
		t.Errorf("pending %q on the newest patch", cl.Status.Maintenance.Pending)
	}

	asked := time.Now().Add(-time.Second)
	mustCLI(t, "cluster", "maintain", name)
	waitFor(t, time.Minute, "maintenance run and the annotation removed", func() (bool, error) {
		cl = getCluster(t, mc, name)
		st := cl.Status.Maintenance
		_, still := cl.Annotations[lotsev1.OperationAnnotation]
		return !still && st.LastRunTime != nil && st.LastRunTime.After(asked), nil
	})
	if !slices.Equal(cl.Status.Maintenance.LastRunActions, []string{"nothing to do"}) {
		t.Errorf("last run did %q, want nothing (the cluster runs the newest patch)", cl.Status.Maintenance.LastRunActions)
	}
	waitClusterEvent(t, name, "MaintenanceWindowChosen", wantBegin)
}
