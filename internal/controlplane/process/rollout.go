package process

import (
	"context"
	"fmt"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/supervisor"
)

// Rolling updates. When the specs of a component's instances change (new
// binaries in an upgrade, new flags from a newer lotse), the instances are
// replaced one at a time, each only when all of them are healthy, and a
// component only after the one it depends on in upstream's version skew
// policy has converged: etcd, then the API servers, then the
// controller-managers and schedulers. Everything is decided from what runs
// (the supervisor's spec hashes), never from memory, so a lotse killed in
// the middle picks up where it was.

// upgradeOrder lists the components whose instances roll, each after the
// ones before it have converged (the konnectivity servers and the load
// balancer do not depend on the Kubernetes version and roll on their own).
var upgradeOrder = []string{CompEtcd, CompAPIServer, CompControllerManager, CompCloudController, CompScheduler}

// outdated lists the instances of specs that do not run their spec: not
// running at all, or running with another.
func (b *Backend) outdated(specs []supervisor.Spec) []string {
	var out []string
	for _, s := range specs {
		if h, ok := b.Supervisor.RunningHash(s.Name); !ok || h != s.Hash() {
			out = append(out, s.Name)
		}
	}
	return out
}

// gate says what a component waits for before its running instances may be
// replaced: "" when every component before it in upgradeOrder runs its spec.
func (b *Backend) gate(spec controlplane.Spec, l Layout, p pki.ClusterPKI, component string) string {
	for _, before := range upgradeOrder {
		if before == component {
			return ""
		}
		specs, _, err := b.instances(spec, l, p, before)
		if err != nil || len(specs) == 0 {
			continue
		}
		if n := len(b.outdated(specs)); n > 0 {
			return fmt.Sprintf("waiting for %s to be updated first (%d of %d instances left)", before, n, len(specs))
		}
	}
	return ""
}

// rollout brings the instances of one component to their specs. Instances
// that do not run start at once (a new control plane starts everything
// together). Of those that run with another spec, one is replaced per call,
// and only once the gate is open and every instance answers its health
// check; the caller's task runs again until none is left. It returns
// whether every instance runs its spec and, if not, what it waits for.
//
// hooks, if set, order the replacements and prepare each (etcd replaces its
// leader last and hands over its leadership first).
func (b *Backend) rollout(ctx context.Context, component string, specs []supervisor.Spec,
	health func(context.Context) []controlplane.ComponentHealth, gate string, hooks *rolloutHooks) (bool, string, error) {
	var stale []int // indexes into specs
	for i, s := range specs {
		h, ok := b.Supervisor.RunningHash(s.Name)
		switch {
		case !ok:
			if err := b.Supervisor.Ensure(s); err != nil {
				return false, "", err
			}
		case h != s.Hash():
			stale = append(stale, i)
		default:
			// Claims a process an earlier lotse left with this spec.
			if err := b.Supervisor.Ensure(s); err != nil {
				return false, "", err
			}
		}
	}
	if len(stale) == 0 {
		return true, "", nil
	}
	progress := fmt.Sprintf("updating %s: %d of %d instances updated", component, len(specs)-len(stale), len(specs))
	if gate != "" {
		return false, progress + "; " + gate, nil
	}
	last := -1
	if hooks != nil && hooks.last != nil {
		last = hooks.last(ctx)
	}
	next, sick := pickReplacement(stale, health(ctx), last)
	if next < 0 {
		return false, progress + "; waiting for " + strings.Join(sick, ", ") + " to be healthy before the next one", nil
	}
	s := specs[next]
	if hooks != nil && hooks.beforeReplace != nil {
		if err := hooks.beforeReplace(ctx, next); err != nil {
			return false, fmt.Sprintf("%s; before replacing %s: %v", progress, s.Name, err), nil
		}
	}
	log.FromContext(ctx).Info("rolling update: replacing a control-plane process", "component", component, "process", s.Name, "left", len(stale))
	// Ensure stops the old process gracefully (an API server fails its
	// /readyz at once, so the load balancers take it out, and serves for
	// its shutdown delay before it drains) and starts the new one.
	if err := b.Supervisor.Ensure(s); err != nil {
		return false, "", err
	}
	return false, fmt.Sprintf("%s; replaced %s, waiting for it to be healthy", progress, s.Name), nil
}

// rolloutHooks adapt a rollout to a component.
type rolloutHooks struct {
	// last is the instance to replace after all others (-1: none), e.g.
	// the etcd leader: replacing it costs a leadership transfer, during
	// which etcd drops writes, so it should cost one, not one per member.
	last func(context.Context) int
	// beforeReplace runs before an instance is replaced; an error leaves
	// the instance running.
	beforeReplace func(context.Context, int) error
}

// pickReplacement chooses which stale instance (indexes into health, which
// is in instance order) to replace now: one that is unhealthy anyway, since
// replacing it costs nothing, or else, if every instance is healthy, the
// first stale one that is not last (-1 for none). With an updated instance
// still unhealthy it returns -1 and the names to wait for: replacing
// another now could cost quorum or the last serving API server.
func pickReplacement(stale []int, health []controlplane.ComponentHealth, last int) (int, []string) {
	isStale := map[int]bool{}
	for _, i := range stale {
		isStale[i] = true
	}
	var sick []string
	for i, h := range health {
		if h.Healthy {
			continue
		}
		if isStale[i] {
			return i, nil
		}
		sick = append(sick, h.Name)
	}
	if len(sick) > 0 {
		return -1, sick
	}
	for _, i := range stale {
		if i != last {
			return i, nil
		}
	}
	return stale[0], nil
}

// rolloutStatus reports, per component in upgradeOrder, how many instances
// run their current spec.
func (b *Backend) rolloutStatus(spec controlplane.Spec, l Layout, p pki.ClusterPKI) []controlplane.ComponentRollout {
	var out []controlplane.ComponentRollout
	for _, c := range upgradeOrder {
		if c == CompScheduler && spec.WithoutScheduler || c == CompCloudController && spec.CloudController == nil {
			continue
		}
		specs, _, err := b.instances(spec, l, p, c)
		if err != nil || len(specs) == 0 {
			continue
		}
		out = append(out, controlplane.ComponentRollout{Component: c, Total: len(specs), Updated: len(specs) - len(b.outdated(specs))})
	}
	return out
}
