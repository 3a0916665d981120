package e2e

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// TestMachineRepair: a machine whose kubelet is frozen (SIGSTOP: alive to
// the supervisor, silent to the API server) is replaced once its node has
// been NotReady past the pool's timeout; when more machines than
// maxUnhealthy allows are broken, none is replaced and RemediationAllowed
// says why, until they recover.
func TestMachineRepair(t *testing.T) {
	const name = "repair"
	parallel(t)
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 2, Maximum: 2, MaxSurge: 1,
		HealthCheck: lotsev1.MachineHealthCheck{NodeNotReadyTimeout: "45s", MaxUnhealthy: "50%"}}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, name)
	cl := waitClusterReady(t, mc, name, 15*time.Minute)

	// freeze stops a machine's kubelet until the test ends (or thaw).
	var frozen []int
	t.Cleanup(func() {
		for _, pid := range frozen {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	freeze := func(m lotsev1.Machine) {
		t.Helper()
		pids := pidsInNetns(machineNSOf(t, cl, m.Status.Addresses[0].Address), "kubelet")
		if len(pids) != 1 {
			t.Fatalf("machine %s: kubelet pids %v", m.Name, pids)
		}
		if err := syscall.Kill(pids[0], syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		frozen = append(frozen, pids[0])
	}
	thaw := func() {
		for _, pid := range frozen {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
		frozen = nil
	}
	machineNames := func() []string {
		var names []string
		for _, m := range listMachines(t, mc, name) {
			if m.DeletionTimestamp.IsZero() {
				names = append(names, m.Name)
			}
		}
		return names
	}

	if !t.Run("a machine whose node stays NotReady is replaced", func(t *testing.T) {
		victim := listMachines(t, mc, name)[0]
		freeze(victim)
		// 50 s until the node is Unknown, 45 s of timeout, then the
		// replacement joins.
		waitFor(t, 8*time.Minute, victim.Name+" replaced", func() (bool, error) {
			names := machineNames()
			return len(names) == 2 && !slices.Contains(names, victim.Name), nil
		})
		waitClusterEvent(t, name, "MachineRepaired", victim.Name)
		frozen = nil // its kubelet went with the machine
		waitClusterReady(t, mc, name, 5*time.Minute)
	}) {
		return
	}

	t.Run("above maxUnhealthy nothing is replaced, and the condition says why", func(t *testing.T) {
		cl = getCluster(t, mc, name)
		before := machineNames()
		for _, m := range listMachines(t, mc, name) {
			freeze(m)
		}
		waitFor(t, 5*time.Minute, "RemediationAllowed False", func() (bool, error) {
			got := getCluster(t, mc, name)
			cond := meta.FindStatusCondition(got.Status.Conditions, lotsev1.ConditionRemediationAllowed)
			return cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == "TooManyUnhealthy", nil
		})
		cond := meta.FindStatusCondition(getCluster(t, mc, name).Status.Conditions, lotsev1.ConditionRemediationAllowed)
		t.Logf("RemediationAllowed: %s", cond.Message)
		// Past the timeout of both, a repair would have come by now.
		time.Sleep(50 * time.Second)
		if after := machineNames(); !slices.Equal(before, after) {
			t.Errorf("machines changed while repairs were stopped: %v -> %v", before, after)
		}
		since := time.Now()
		thaw()
		waitCondition(t, mc, name, lotsev1.ConditionRemediationAllowed, since.Add(-time.Second), 5*time.Minute)
		// Both come back; neither is replaced on the way (repairs settle
		// for a minute after a storm).
		waitClusterReady(t, mc, name, 5*time.Minute)
		if after := machineNames(); !slices.Equal(before, after) {
			t.Errorf("machines changed: %v -> %v", before, after)
		}
	})
}
