package cluster

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// rollMachine is a machine of pool "p" at version; ready makes it a Ready node.
func rollMachine(index int32, version string, ready bool) *lotsev1.Machine {
	m := &lotsev1.Machine{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("m%d", index)},
		Spec:       lotsev1.MachineSpec{Pool: "p", Version: version, Index: index},
		Status:     lotsev1.MachineStatus{Phase: lotsev1.MachineProvisioning},
	}
	if ready {
		m.Status.Phase = lotsev1.MachineRunning
		m.Status.Conditions = []metav1.Condition{{Type: "NodeReady", Status: metav1.ConditionTrue}}
	}
	return m
}

func machineNames(ms []*lotsev1.Machine) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func TestPlanInPlace(t *testing.T) {
	const oldV, newV = "1.36.3", "1.37.2"
	inPlace := func(unavailable int32) lotsev1.WorkerPool {
		return lotsev1.WorkerPool{Name: "p", MaxSurge: 1, MaxUnavailable: unavailable, UpdateStrategy: lotsev1.UpdateInPlace}
	}
	tests := []struct {
		name        string
		pool        lotsev1.WorkerPool
		live        []*lotsev1.Machine
		wantUpdate  []string
		wantWaiting string
	}{
		{"one at a time with maxUnavailable 0", inPlace(0), []*lotsev1.Machine{rollMachine(1, oldV, true), rollMachine(0, oldV, true)},
			[]string{"m0"}, "in-place update to 1.37.2: 0 of 2 machines updated; 1 updating (at most 1 at a time)"},
		{"one is updating: the next waits", inPlace(0), []*lotsev1.Machine{rollMachine(0, newV, false), rollMachine(1, oldV, true)},
			nil, "1 updating"},
		{"maxUnavailable 2: two at once", inPlace(2), []*lotsev1.Machine{rollMachine(0, oldV, true), rollMachine(1, oldV, true), rollMachine(2, oldV, true)},
			[]string{"m0", "m1"}, "0 of 3 machines updated"},
		{"not Ready first", inPlace(0), []*lotsev1.Machine{rollMachine(0, oldV, true), rollMachine(1, oldV, false)},
			[]string{"m1"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := planPool(tt.pool, len(tt.live), tt.live, nil, newV, true)
			if got := machineNames(plan.update); !slices.Equal(got, tt.wantUpdate) {
				t.Errorf("update = %v, want %v", got, tt.wantUpdate)
			}
			if plan.create != 0 || len(plan.remove) != 0 {
				t.Errorf("an in-place update created %d and removed %v machines", plan.create, names(plan.remove))
			}
			if !strings.Contains(plan.waiting, tt.wantWaiting) {
				t.Errorf("waiting = %q, want %q", plan.waiting, tt.wantWaiting)
			}
		})
	}
	// A new machine class cannot be had in place: the pool rolls by replacement.
	pool := inPlace(0)
	pool.MachineClass = "small"
	plan := planPool(pool, 1, []*lotsev1.Machine{rollMachine(0, oldV, true)}, nil, newV, true)
	if len(plan.update) != 0 || plan.create != 1 {
		t.Errorf("class change with InPlace: update %v, create %d; want a replacement", machineNames(plan.update), plan.create)
	}
}

func names(rs []removal) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.machine.Name)
	}
	return out
}

func TestPlanPool(t *testing.T) {
	const oldV, newV = "1.36.3", "1.37.2"
	pool := func(surge, unavailable int32) lotsev1.WorkerPool {
		return lotsev1.WorkerPool{Name: "p", MaxSurge: surge, MaxUnavailable: unavailable}
	}
	draining := rollMachine(9, oldV, true)
	draining.Status.Conditions = append(draining.Status.Conditions, metav1.Condition{Type: "Drained", Status: metav1.ConditionFalse,
		Message: "evicting default/web-0 (blocked by a PodDisruptionBudget)"})
	stopped := rollMachine(1, oldV, false)
	stopped.Spec.Stopped = true
	tests := []struct {
		name        string
		pool        lotsev1.WorkerPool
		desired     int
		live        []*lotsev1.Machine
		deleting    []*lotsev1.Machine
		wantCreate  int
		wantRemove  []string
		wantWaiting string
		// repairsStopped: the pool has more unhealthy machines than
		// its maxUnhealthy allows.
		repairsStopped bool
	}{
		{name: "scale up", pool: pool(1, 0), desired: 3, live: []*lotsev1.Machine{rollMachine(0, newV, true)}, wantCreate: 2},
		{name: "scale down: not running first, then the newest", pool: pool(1, 0), desired: 1,
			live:       []*lotsev1.Machine{rollMachine(0, newV, true), rollMachine(1, newV, true), rollMachine(2, newV, false)},
			wantRemove: []string{"m2", "m1"}},
		{name: "steady", pool: pool(1, 0), desired: 2, live: []*lotsev1.Machine{rollMachine(0, newV, true), rollMachine(1, newV, true)}},
		{name: "roll starts with a surge machine", pool: pool(1, 0), desired: 2,
			live: []*lotsev1.Machine{rollMachine(0, oldV, true), rollMachine(1, oldV, true)}, wantCreate: 1,
			wantWaiting: "rolling update to 1.37.2 (local machines): 0 of 2 machines updated"},
		{name: "new machine not Ready yet: nothing goes", pool: pool(1, 0), desired: 2,
			live:        []*lotsev1.Machine{rollMachine(0, oldV, true), rollMachine(1, oldV, true), rollMachine(2, newV, false)},
			wantWaiting: "waiting for new machines to be Ready nodes (maxSurge 1, maxUnavailable 0)"},
		{name: "new machine Ready: the oldest goes", pool: pool(1, 0), desired: 2,
			live:       []*lotsev1.Machine{rollMachine(1, oldV, true), rollMachine(0, oldV, true), rollMachine(2, newV, true)},
			wantRemove: []string{"m0"}, wantWaiting: "1 of 2 machines updated"},
		{name: "a draining machine counts against the surge", pool: pool(1, 0), desired: 2,
			live:     []*lotsev1.Machine{rollMachine(1, oldV, true), rollMachine(2, newV, true)},
			deleting: []*lotsev1.Machine{draining}, wantWaiting: "waiting for old machines to drain: m9: evicting default/web-0 (blocked by a PodDisruptionBudget)"},
		{name: "maxUnavailable without surge removes first", pool: pool(0, 1), desired: 2,
			live: []*lotsev1.Machine{rollMachine(0, oldV, true), rollMachine(1, oldV, true)}, wantRemove: []string{"m0"},
			wantWaiting: "0 of 2 machines updated"},
		{name: "an old machine that is not Ready goes at once", pool: pool(1, 0), desired: 2,
			live:       []*lotsev1.Machine{rollMachine(0, oldV, true), rollMachine(1, oldV, false)},
			wantCreate: 1, wantRemove: []string{"m1"}, wantWaiting: "0 of 2 machines updated"},
		{name: "not Ready old machines stay while repairs are stopped", pool: pool(1, 0), desired: 2,
			live:       []*lotsev1.Machine{rollMachine(0, oldV, false), rollMachine(1, oldV, false)},
			wantCreate: 1, repairsStopped: true, wantWaiting: "m0 is not Ready and repairs are stopped"},
		{name: "a new machine class rolls the pool", pool: lotsev1.WorkerPool{Name: "p", MaxSurge: 1, MachineClass: "small"}, desired: 1,
			live: []*lotsev1.Machine{rollMachine(0, newV, true)}, wantCreate: 1, wantWaiting: "rolling update to 1.37.2 (small machines): 0 of 1"},
		{name: "both zero still rolls with one surge machine", pool: pool(0, 0), desired: 1,
			live: []*lotsev1.Machine{rollMachine(0, oldV, true)}, wantCreate: 1, wantWaiting: "0 of 1 machines updated"},
		{name: "a stopped old machine holds the roll", pool: pool(1, 0), desired: 2,
			live:        []*lotsev1.Machine{rollMachine(0, newV, true), stopped, rollMachine(2, newV, true)},
			wantWaiting: "m1 is stopped (start or delete it to update it)"},
		{name: "last old machine still draining", pool: pool(1, 0), desired: 1,
			live: []*lotsev1.Machine{rollMachine(2, newV, true)}, deleting: []*lotsev1.Machine{draining},
			wantWaiting: "waiting for 1 old machines to drain: m9: evicting default/web-0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := planPool(tt.pool, tt.desired, tt.live, tt.deleting, newV, !tt.repairsStopped)
			if plan.create != tt.wantCreate {
				t.Errorf("create = %d, want %d", plan.create, tt.wantCreate)
			}
			if got := names(plan.remove); !slices.Equal(got, tt.wantRemove) {
				t.Errorf("remove = %v, want %v", got, tt.wantRemove)
			}
			if !strings.Contains(plan.waiting, tt.wantWaiting) || (tt.wantWaiting == "" && plan.waiting != "") {
				t.Errorf("waiting = %q, want it to contain %q", plan.waiting, tt.wantWaiting)
			}
		})
	}
}

// TestRollingUpdateKeepsReadyNodes plays whole rolls step by step (a new
// machine becomes Ready one step after its creation, a removed one drains
// for a step) and checks the bounds at every step: never fewer Ready nodes
// than desired - maxUnavailable, never more machines than desired +
// maxSurge, and the roll ends with every machine at the new version.
func TestRollingUpdateKeepsReadyNodes(t *testing.T) {
	const oldV, newV = "1.36.3", "1.37.2"
	for _, tc := range []struct{ desired, surge, unavailable int }{
		{1, 1, 0}, {2, 1, 0}, {3, 1, 0}, {3, 2, 0}, {3, 0, 1}, {4, 1, 1}, {5, 2, 2},
	} {
		t.Run(fmt.Sprintf("desired=%d surge=%d unavailable=%d", tc.desired, tc.surge, tc.unavailable), func(t *testing.T) {
			pool := lotsev1.WorkerPool{Name: "p", MaxSurge: int32(tc.surge), MaxUnavailable: int32(tc.unavailable)}
			var live, deleting []*lotsev1.Machine
			next := int32(0)
			for range tc.desired {
				live = append(live, rollMachine(next, oldV, true))
				next++
			}
			for step := 0; ; step++ {
				if step > 100 {
					t.Fatal("the roll did not finish in 100 steps")
				}
				// Last step's changes land: new machines become Ready,
				// drained machines disappear.
				deleting = nil
				for _, m := range live {
					if m.Spec.Version == newV && !machineReady(m) {
						*m = *rollMachine(m.Spec.Index, newV, true)
					}
				}
				plan := planPool(pool, tc.desired, live, deleting, newV, true)
				for _, rm := range plan.remove {
					live = slices.DeleteFunc(live, func(m *lotsev1.Machine) bool { return m == rm.machine })
					deleting = append(deleting, rm.machine)
				}
				for range plan.create {
					live = append(live, rollMachine(next, newV, false))
					next++
				}
				ready := 0
				for _, m := range live {
					if machineReady(m) {
						ready++
					}
				}
				if ready < tc.desired-tc.unavailable {
					t.Fatalf("step %d: %d Ready nodes, fewer than %d - %d", step, ready, tc.desired, tc.unavailable)
				}
				if total := len(live) + len(deleting); total > tc.desired+max(tc.surge, 1) {
					t.Fatalf("step %d: %d machines, more than %d + %d", step, total, tc.desired, tc.surge)
				}
				if plan.waiting == "" && plan.create == 0 && len(plan.remove) == 0 {
					break
				}
			}
			if len(live) != tc.desired {
				t.Errorf("the roll ended with %d machines, want %d", len(live), tc.desired)
			}
			for _, m := range live {
				if m.Spec.Version != newV {
					t.Errorf("machine %s still at %s", m.Name, m.Spec.Version)
				}
			}
		})
	}
}
