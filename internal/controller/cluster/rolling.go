package cluster

// Pool scaling and rolling updates: how many machines a pool creates and
// which it deletes, decided from what exists (level-triggered: a lotse
// killed in the middle of a roll decides the same after its restart).

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// poolPlan is what a pool does next.
type poolPlan struct {
	// create is how many machines to create at the target version.
	create int
	// remove are machines to drain and delete, with why.
	remove []removal
	// update are machines to move to the version in place.
	update []*lotsev1.Machine
	// waiting says what a roll waits for ("" when there is no roll).
	waiting string
}

type removal struct {
	machine *lotsev1.Machine
	reason  string
}

// planPool decides a pool's next step. live are its machines that are not
// being deleted; deleting are those that are (still draining): they count
// against maxSurge, so a roll held up by a drain does not keep
// adding machines. version is the version new machines get; machines at
// another version are replaced by a rolling update: at most maxSurge
// machines above the desired count, and never fewer than desired minus
// maxUnavailable Ready nodes.
//
// Old machines that are not Ready go first, since removing them costs no
// availability, but only with mayRemoveUnready (the pool's health check
// allows repairs): when many nodes are NotReady at once the cause is
// elsewhere, and replacing them would lose their node-local data for nothing.
func planPool(pool lotsev1.WorkerPool, desired int, live, deleting []*lotsev1.Machine, version string, mayRemoveUnready bool) poolPlan {
	var old, current, oldDraining []*lotsev1.Machine
	for _, m := range live {
		if upToDate(pool, m, version) {
			current = append(current, m)
		} else {
			old = append(old, m)
		}
	}
	for _, m := range deleting {
		if !upToDate(pool, m, version) {
			oldDraining = append(oldDraining, m)
		}
	}
	var plan poolPlan
	if len(old) == 0 {
		if len(oldDraining) > 0 {
			// The roll's last step: nodes of the old version are still
			// there until their drains end.
			plan.waiting = fmt.Sprintf("rolling update to %s: waiting for %d old machines to drain", version, len(oldDraining))
			if msg := drainMessage(oldDraining); msg != "" {
				plan.waiting += ": " + msg
			}
		}
		if n := desired - len(current); n > 0 {
			plan.create = n
		}
		if len(current) > desired {
			// Machines that are not running go first, then the newest.
			ms := append([]*lotsev1.Machine(nil), current...)
			sort.SliceStable(ms, func(i, j int) bool {
				ri, rj := ms[i].Status.Phase == lotsev1.MachineRunning, ms[j].Status.Phase == lotsev1.MachineRunning
				if ri != rj {
					return !ri
				}
				return ms[i].Spec.Index > ms[j].Spec.Index
			})
			for _, m := range ms[:len(current)-desired] {
				plan.remove = append(plan.remove, removal{m, "ScaleDown"})
			}
		}
		return plan
	}

	if pool.UpdateStrategy == lotsev1.UpdateInPlace && !slices.ContainsFunc(old, func(m *lotsev1.Machine) bool {
		return classOf(m.Spec.MachineClass) != classOf(pool.MachineClass)
	}) {
		return planInPlace(pool, desired, live, old, current, version, mayRemoveUnready)
	}
	surge, unavailable := int(pool.MaxSurge), int(pool.MaxUnavailable)
	if surge == 0 && unavailable == 0 {
		surge = 1 // a roll must be able to move
	}
	total := len(live) + len(deleting)
	if n := min(desired-len(current), desired+surge-total); n > 0 {
		plan.create = n
	}
	ready := 0
	for _, m := range live {
		if machineReady(m) {
			ready++
		}
	}
	// Old machines that are not Ready first, then the oldest.
	sort.SliceStable(old, func(i, j int) bool {
		ri, rj := machineReady(old[i]), machineReady(old[j])
		if ri != rj {
			return !ri
		}
		return old[i].Spec.Index < old[j].Spec.Index
	})
	minReady := desired - unavailable
	var held []string
	for _, m := range old {
		if m.Spec.Stopped {
			held = append(held, m.Name+" is stopped (start or delete it to update it)")
			continue
		}
		switch {
		case !machineReady(m):
			if !mayRemoveUnready {
				held = append(held, m.Name+" is not Ready and repairs are stopped (see RemediationAllowed)")
				continue
			}
		case ready-1 >= minReady:
			ready--
		default:
			continue
		}
		plan.remove = append(plan.remove, removal{m, "RollingUpdate"})
	}
	updated := len(current)
	plan.waiting = fmt.Sprintf("rolling update to %s (%s machines): %d of %d machines updated", version, classOf(pool.MachineClass), updated, desired)
	switch {
	case len(held) > 0:
		plan.waiting += "; " + strings.Join(held, "; ")
	case len(plan.remove) == 0 && plan.create == 0 && len(oldDraining) > 0:
		plan.waiting += "; waiting for old machines to drain"
		if msg := drainMessage(oldDraining); msg != "" {
			plan.waiting += ": " + msg
		}
	case len(plan.remove) == 0 && plan.create == 0:
		plan.waiting += fmt.Sprintf("; waiting for new machines to be Ready nodes (maxSurge %d, maxUnavailable %d)", surge, unavailable)
	}
	return plan
}

// planInPlace updates old machines in place, at most max(1,
// maxUnavailable) at a time: a machine at the new version that is not a
// Ready node yet (draining, swapping, or new) counts as one of them.
// Scaling goes on as without a roll.
func planInPlace(pool lotsev1.WorkerPool, desired int, live, old, current []*lotsev1.Machine, version string, mayUpdateUnready bool) poolPlan {
	var plan poolPlan
	if n := desired - len(live); n > 0 {
		plan.create = n
	}
	budget := max(1, int(pool.MaxUnavailable))
	busy, updated := 0, 0
	for _, m := range current {
		switch {
		case machineReady(m):
			updated++
		case !m.Spec.Stopped:
			busy++
		}
	}
	sort.SliceStable(old, func(i, j int) bool {
		ri, rj := machineReady(old[i]), machineReady(old[j])
		if ri != rj {
			return !ri
		}
		return old[i].Spec.Index < old[j].Spec.Index
	})
	var held []string
	for _, m := range old {
		switch {
		case m.Spec.Stopped:
			held = append(held, m.Name+" is stopped (start or delete it to update it)")
		case !machineReady(m) && !mayUpdateUnready:
			held = append(held, m.Name+" is not Ready and repairs are stopped (see RemediationAllowed)")
		case busy < budget:
			plan.update = append(plan.update, m)
			busy++
		}
	}
	plan.waiting = fmt.Sprintf("in-place update to %s: %d of %d machines updated", version, updated, len(live))
	if len(held) > 0 {
		plan.waiting += "; " + strings.Join(held, "; ")
	} else if busy > 0 {
		plan.waiting += fmt.Sprintf("; %d updating (at most %d at a time)", busy, budget)
	}
	return plan
}

// upToDate says whether a machine runs the pool's current configuration:
// the cluster's version and the pool's machine class. Machines that do not
// are replaced by a rolling update.
func upToDate(pool lotsev1.WorkerPool, m *lotsev1.Machine, version string) bool {
	return m.Spec.Version == version && classOf(m.Spec.MachineClass) == classOf(pool.MachineClass)
}

func classOf(name string) string {
	if name == "" {
		return lotsev1.MachineClassLocal
	}
	return name
}

// drainMessage describes the drains of a pool's machines that are being
// deleted, from their Drained condition.
func drainMessage(deleting []*lotsev1.Machine) string {
	var parts []string
	for _, m := range deleting {
		if c := meta.FindStatusCondition(m.Status.Conditions, "Drained"); c != nil && c.Status != "True" {
			parts = append(parts, m.Name+": "+c.Message)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}
