package cluster

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/addons/keeper"
	"github.com/lotse/lotse/internal/controlplane"
)

var testNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// testMachine is a pool "w" machine created an hour ago whose NodeReady
// condition changed to ready `ready` at lastChange before testNow.
func testMachine(name string, phase lotsev1.MachinePhase, ready bool, lastChange time.Duration) *lotsev1.Machine {
	m := &lotsev1.Machine{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, CreationTimestamp: metav1.NewTime(testNow.Add(-time.Hour)),
		Labels: map[string]string{lotsev1.LabelCluster: "c1", lotsev1.LabelPool: "w"}},
		Spec:   lotsev1.MachineSpec{Cluster: "c1", Pool: "w", MachineClass: "local", Version: "1.36.3"},
		Status: lotsev1.MachineStatus{Phase: phase}}
	status := metav1.ConditionFalse
	if ready {
		status = metav1.ConditionTrue
	}
	m.Status.Conditions = []metav1.Condition{{Type: "NodeReady", Status: status, Reason: "R", Message: "kubelet stopped posting node status",
		LastTransitionTime: metav1.NewTime(testNow.Add(-lastChange))}}
	return m
}

func TestMachineHealth(t *testing.T) {
	hc, err := parseHealthCheck(lotsev1.MachineHealthCheck{NodeNotReadyTimeout: "5m", NodeStartupTimeout: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	fresh := testMachine("fresh", lotsev1.MachineProvisioning, false, 2*time.Minute)
	pending := testMachine("pending", lotsev1.MachinePending, false, time.Hour)
	stopped := testMachine("stopped", lotsev1.MachineStopped, false, time.Hour)
	stopped.Spec.Stopped = true
	deleting := testMachine("deleting", lotsev1.MachineRunning, false, time.Hour)
	deleting.DeletionTimestamp = &metav1.Time{Time: testNow}
	off, _ := parseHealthCheck(lotsev1.MachineHealthCheck{NodeNotReadyTimeout: "0s"})
	tests := []struct {
		name    string
		hc      healthCheck
		machine *lotsev1.Machine
		want    bool
		why     string
	}{
		{"ready", hc, testMachine("m", lotsev1.MachineRunning, true, time.Hour), false, ""},
		{"not ready, within the timeout", hc, testMachine("m", lotsev1.MachineRunning, false, 4*time.Minute), false, ""},
		{"not ready past the timeout", hc, testMachine("m", lotsev1.MachineRunning, false, 6*time.Minute), true, "node not Ready for 6m0s (timeout 5m0s): kubelet stopped posting"},
		{"still starting, within the startup timeout", hc, fresh, false, ""},
		{"never ready past the startup timeout", hc, testMachine("m", lotsev1.MachineProvisioning, false, time.Hour), true, "no Ready node 10m0s after its provisioning began"},
		{"pending for long: waiting is not its fault", hc, pending, false, ""},
		{"stopped on purpose", hc, stopped, false, ""},
		{"being deleted", hc, deleting, false, ""},
		{"repairs off", off, testMachine("m", lotsev1.MachineRunning, false, time.Hour), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := tt.hc.unhealthy(tt.machine, testNow)
			if got != tt.want || !strings.Contains(why, tt.why) {
				t.Errorf("unhealthy = %v (%q), want %v (%q)", got, why, tt.want, tt.why)
			}
		})
	}
}

func TestMaxUnhealthy(t *testing.T) {
	tests := []struct {
		max     string
		total   int
		want    int
		wantErr bool
	}{
		{"40%", 2, 1, false}, {"40%", 3, 2, false}, {"40%", 5, 2, false}, {"0%", 5, 0, false},
		{"100%", 4, 4, false}, {"2", 10, 2, false}, {"140%", 3, 0, true}, {"many", 3, 0, true},
	}
	for _, tt := range tests {
		got, err := healthCheck{maxUnhealthy: tt.max}.allowed(tt.total)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("allowed(%s of %d) = %d, %v; want %d, error %v", tt.max, tt.total, got, err, tt.want, tt.wantErr)
		}
	}
}

func poolCluster(maxUnhealthy string) *lotsev1.Cluster {
	c := testCluster()
	c.Spec.Kubernetes.Version = "1.36.3" // the machines' version: no roll
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 2, Maximum: 2, MaxSurge: 1,
		HealthCheck: lotsev1.MachineHealthCheck{NodeNotReadyTimeout: "1m", MaxUnhealthy: maxUnhealthy}}}
	return c
}

func liveMachines(t *testing.T, c client.Client) []string {
	t.Helper()
	list := &lotsev1.MachineList{}
	if err := c.List(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range list.Items {
		if m.DeletionTimestamp.IsZero() {
			names = append(names, m.Name)
		}
	}
	return names
}

func TestUnhealthyMachineReplaced(t *testing.T) {
	ctx := context.Background()
	cl := poolCluster("40%")
	healthy := testMachine("c1-w-healthy", lotsev1.MachineRunning, true, time.Hour)
	broken := testMachine("c1-w-broken", lotsev1.MachineRunning, false, time.Until(testNow)+2*time.Minute)
	broken.Spec.Index = 1
	r, c, _, _ := newTestReconciler(t, cl, healthy, broken)
	r.Addons = &keeper.Keeper{}
	if _, _, err := r.ensureMachines(ctx, cl, controlplane.Spec{}); err != nil {
		t.Fatal(err)
	}
	names := liveMachines(t, c)
	if len(names) != 2 || names[0] == "c1-w-broken" || names[1] == "c1-w-broken" {
		t.Errorf("machines after the repair: %v, want c1-w-healthy and a replacement", names)
	}
	status := &lotsev1.ClusterStatus{}
	if err := r.workerStatus(ctx, cl, status); err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionTrue(status.Conditions, lotsev1.ConditionRemediationAllowed) {
		t.Errorf("RemediationAllowed: %+v", status.Conditions)
	}
}

func TestTooManyUnhealthyStopsRepairs(t *testing.T) {
	ctx := context.Background()
	cl := poolCluster("40%")
	a := testMachine("c1-w-a", lotsev1.MachineRunning, false, time.Until(testNow)+2*time.Minute)
	b := testMachine("c1-w-b", lotsev1.MachineRunning, false, time.Until(testNow)+2*time.Minute)
	b.Spec.Index = 1
	r, c, _, _ := newTestReconciler(t, cl, a, b)
	r.Addons = &keeper.Keeper{}
	if _, _, err := r.ensureMachines(ctx, cl, controlplane.Spec{}); err != nil {
		t.Fatal(err)
	}
	if names := liveMachines(t, c); len(names) != 2 || names[0] != "c1-w-a" || names[1] != "c1-w-b" {
		t.Errorf("machines: %v; with 2 of 2 unhealthy (maxUnhealthy 40%%) none may be replaced", names)
	}
	status := &lotsev1.ClusterStatus{}
	if err := r.workerStatus(ctx, cl, status); err != nil {
		t.Fatal(err)
	}
	cond := meta.FindStatusCondition(status.Conditions, lotsev1.ConditionRemediationAllowed)
	if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != "TooManyUnhealthy" ||
		!strings.Contains(cond.Message, "pool w: 2 of 2 machines unhealthy, more than maxUnhealthy 40% allows (1)") {
		t.Errorf("RemediationAllowed: %+v", cond)
	}
}

// A node that just went NotReady counts against maxUnhealthy before its
// timeout ends: one past its timeout is not replaced while another fails too.
func TestFailingNodesCountAtOnce(t *testing.T) {
	ctx := context.Background()
	cl := poolCluster("40%")
	past := testMachine("c1-w-a", lotsev1.MachineRunning, false, time.Until(testNow)+2*time.Minute)
	fresh := testMachine("c1-w-b", lotsev1.MachineRunning, false, time.Until(testNow)+time.Second)
	fresh.Spec.Index = 1
	r, c, _, _ := newTestReconciler(t, cl, past, fresh)
	if _, _, err := r.ensureMachines(ctx, cl, controlplane.Spec{}); err != nil {
		t.Fatal(err)
	}
	if names := liveMachines(t, c); len(names) != 2 || names[0] != "c1-w-a" {
		t.Errorf("machines: %v; c1-w-a was replaced while c1-w-b failed too", names)
	}
}

// After too many failures, repairs wait a while once they are allowed
// again: stragglers of a mass recovery are not replaced.
func TestRepairsSettleAfterStorm(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name     string
		cond     metav1.Condition
		replaced bool
	}{
		{"still blocked", metav1.Condition{Status: metav1.ConditionFalse, Reason: "TooManyUnhealthy", LastTransitionTime: metav1.Now()}, false},
		{"just resumed", metav1.Condition{Status: metav1.ConditionTrue, Reason: reasonRepairsResumed, LastTransitionTime: metav1.Now()}, false},
		{"resumed long ago", metav1.Condition{Status: metav1.ConditionTrue, Reason: reasonRepairsResumed,
			LastTransitionTime: metav1.NewTime(time.Now().Add(-2 * repairSettle))}, true},
		{"never blocked", metav1.Condition{Status: metav1.ConditionTrue, Reason: "HealthChecksPass", LastTransitionTime: metav1.Now()}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cl := poolCluster("40%")
			tt.cond.Type = lotsev1.ConditionRemediationAllowed
			cl.Status.Conditions = []metav1.Condition{tt.cond}
			healthy := testMachine("c1-w-healthy", lotsev1.MachineRunning, true, time.Hour)
			broken := testMachine("c1-w-broken", lotsev1.MachineRunning, false, time.Until(testNow)+2*time.Minute)
			broken.Spec.Index = 1
			r, c, _, _ := newTestReconciler(t, cl, healthy, broken)
			if _, _, err := r.ensureMachines(ctx, cl, controlplane.Spec{}); err != nil {
				t.Fatal(err)
			}
			names := liveMachines(t, c)
			if replaced := !slices.Contains(names, "c1-w-broken"); replaced != tt.replaced {
				t.Errorf("replaced = %v, want %v (machines %v)", replaced, tt.replaced, names)
			}
		})
	}
}
