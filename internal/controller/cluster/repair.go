package cluster

// Machine health checks: a pool's machine whose node stays NotReady (or
// never becomes Ready) is replaced, as Cluster API's MachineHealthChecks
// do, unless so many of the pool are unhealthy at once that the cause is
// elsewhere; then repairs stop and RemediationAllowed says why.

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// Defaults of spec.workers[].healthCheck (the CRD sets them too).
const (
	defaultNodeNotReadyTimeout = 5 * time.Minute
	defaultNodeStartupTimeout  = 10 * time.Minute
	defaultMaxUnhealthy        = "40%"
)

// repairSettle is how long repairs stay paused after RemediationAllowed
// returns to True: when many nodes come back together, the stragglers
// (whose kubelets report a few seconds later) must not be replaced.
const repairSettle = time.Minute

// repairsPaused says whether repairs wait for the cluster to settle after
// too many machines were unhealthy at once.
func repairsPaused(c *lotsev1.Cluster, now time.Time) bool {
	cond := meta.FindStatusCondition(c.Status.Conditions, lotsev1.ConditionRemediationAllowed)
	if cond == nil {
		return false
	}
	return cond.Status == metav1.ConditionFalse ||
		(cond.Reason == reasonRepairsResumed && now.Sub(cond.LastTransitionTime.Time) < repairSettle)
}

// reasonRepairsResumed marks RemediationAllowed True after it was False.
const reasonRepairsResumed = "RepairsResumed"

// healthCheck is a pool's parsed health check.
type healthCheck struct {
	notReady, startup time.Duration
	maxUnhealthy      string
}

func parseHealthCheck(hc lotsev1.MachineHealthCheck) (healthCheck, error) {
	out := healthCheck{notReady: defaultNodeNotReadyTimeout, startup: defaultNodeStartupTimeout, maxUnhealthy: defaultMaxUnhealthy}
	var err error
	if hc.NodeNotReadyTimeout != "" {
		if out.notReady, err = time.ParseDuration(hc.NodeNotReadyTimeout); err != nil {
			return out, fmt.Errorf("healthCheck.nodeNotReadyTimeout: %w", err)
		}
	}
	if hc.NodeStartupTimeout != "" {
		if out.startup, err = time.ParseDuration(hc.NodeStartupTimeout); err != nil {
			return out, fmt.Errorf("healthCheck.nodeStartupTimeout: %w", err)
		}
	}
	if hc.MaxUnhealthy != "" {
		out.maxUnhealthy = hc.MaxUnhealthy
	}
	return out, nil
}

// allowed is how many of total machines may be unhealthy with repairs
// going on: a count, or a percentage rounded up (as Cluster API does).
func (h healthCheck) allowed(total int) (int, error) {
	if p, ok := strings.CutSuffix(h.maxUnhealthy, "%"); ok {
		pct, err := strconv.Atoi(p)
		if err != nil || pct < 0 || pct > 100 {
			return 0, fmt.Errorf("healthCheck.maxUnhealthy %q is not a percentage", h.maxUnhealthy)
		}
		return int(math.Ceil(float64(total) * float64(pct) / 100)), nil
	}
	n, err := strconv.Atoi(h.maxUnhealthy)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("healthCheck.maxUnhealthy %q is neither a percentage nor a count", h.maxUnhealthy)
	}
	return n, nil
}

// failing says whether a machine that was a Ready node is not one now,
// for however short a time: such machines count against maxUnhealthy, so
// that when many nodes fail together (a network fault, say) no repair
// starts just because one of them passed its timeout first.
func failing(m *lotsev1.Machine) bool {
	if m.Spec.Stopped || !m.DeletionTimestamp.IsZero() || m.Status.Phase != lotsev1.MachineRunning || updatingInPlace(m) {
		return false
	}
	return !meta.IsStatusConditionTrue(m.Status.Conditions, "NodeReady")
}

// updatingInPlace: the machine's node is drained for, or going through,
// an in-place update; that is no fault.
func updatingInPlace(m *lotsev1.Machine) bool {
	c := meta.FindStatusCondition(m.Status.Conditions, "NodeReady")
	return c != nil && c.Reason == lotsev1.ReasonUpdatingInPlace
}

// unhealthy says whether a machine needs replacing, and why. A stopped
// machine is stopped on purpose and never counts.
func (h healthCheck) unhealthy(m *lotsev1.Machine, now time.Time) (bool, string) {
	if m.Spec.Stopped || !m.DeletionTimestamp.IsZero() || updatingInPlace(m) {
		return false, ""
	}
	cond := meta.FindStatusCondition(m.Status.Conditions, "NodeReady")
	if cond != nil && cond.Status == metav1.ConditionTrue {
		return false, ""
	}
	if m.Status.Phase != lotsev1.MachineRunning {
		// Never a Ready node (yet): the startup timeout applies, from when
		// the provider began to make it (a Pending machine waits for
		// binaries, images or the control plane, which is not its fault).
		if m.Status.Phase != lotsev1.MachineProvisioning || h.startup == 0 || cond == nil {
			return false, ""
		}
		if now.Sub(cond.LastTransitionTime.Time) > h.startup {
			// The machine's last word goes with the repair: its
			// processes are gone with it.
			return true, fmt.Sprintf("no Ready node %s after its provisioning began (last: %s)", h.startup, cond.Message)
		}
		return false, ""
	}
	if h.notReady == 0 || cond == nil {
		return false, ""
	}
	if since := now.Sub(cond.LastTransitionTime.Time); since > h.notReady {
		return true, fmt.Sprintf("node not Ready for %s (timeout %s): %s", since.Round(time.Second), h.notReady, cond.Message)
	}
	return false, ""
}

// poolRepair is what the health check found in one pool.
type poolRepair struct {
	// replace are the unhealthy machines, with why, if repairs may go on.
	replace map[*lotsev1.Machine]string
	// blocked says why repairs stopped ("" when they may go on).
	blocked string
}

// checkPool looks at the live machines of a pool.
func checkPool(pool lotsev1.WorkerPool, machines []*lotsev1.Machine, now time.Time) (poolRepair, error) {
	out := poolRepair{replace: map[*lotsev1.Machine]string{}}
	hc, err := parseHealthCheck(pool.HealthCheck)
	if err != nil {
		return out, fmt.Errorf("pool %s: %w", pool.Name, err)
	}
	total, unhealthy := 0, 0
	for _, m := range machines {
		if m.Spec.Stopped || !m.DeletionTimestamp.IsZero() {
			continue
		}
		total++
		bad, why := hc.unhealthy(m, now)
		if bad {
			out.replace[m] = why
		}
		if bad || failing(m) {
			unhealthy++
		}
	}
	allowed, err := hc.allowed(total)
	if err != nil {
		return out, fmt.Errorf("pool %s: %w", pool.Name, err)
	}
	if unhealthy > allowed {
		out.blocked = fmt.Sprintf("pool %s: %d of %d machines unhealthy, more than maxUnhealthy %s allows (%d): repairs stopped until fewer are",
			pool.Name, unhealthy, total, hc.maxUnhealthy, allowed)
		out.replace = map[*lotsev1.Machine]string{}
	}
	return out, nil
}
