package cluster

import (
	"context"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/tasks"
)

// Task names of worker pools.
const (
	TaskNodeNetwork   = "node-network"
	TaskNodeBootstrap = "node-bootstrap"
	TaskMachines      = "machines"
	TaskPodRoutes     = "pod-routes"
	TaskAddons        = "addons"
	// TaskCloud: the manager's own cloud controllers for the cluster, or
	// (a cluster with a cloud controller manager process of its own, the
	// backend's task "cloud-controller-manager") their end.
	TaskCloud = "cloud-controllers"
)

// workerTasks are the tasks of a cluster with worker pools.
func (r *Reconciler) workerTasks(c *lotsev1.Cluster, spec controlplane.Spec) []tasks.Task {
	if len(c.Spec.Workers) == 0 {
		return nil
	}
	return []tasks.Task{
		{Name: TaskNodeNetwork, DependsOn: []string{r.EndpointTask(spec)}, Run: func(ctx context.Context) (bool, string, error) {
			return r.ensureNodeNetwork(ctx, c, spec)
		}},
		{Name: TaskNodeBootstrap, DependsOn: []string{TaskNodeNetwork, "kube-controller-manager"}, Run: func(ctx context.Context) (bool, string, error) {
			return r.ensureNodeBootstrap(ctx, spec)
		}},
		// Before the machines: their kubelets run with an external cloud
		// provider, and their nodes stay tainted until it initializes them.
		{Name: TaskCloud, DependsOn: cloudAfter(spec), Run: func(ctx context.Context) (bool, string, error) {
			return r.ensureCloud(ctx, c, spec)
		}},
		{Name: TaskMachines, DependsOn: []string{TaskNodeBootstrap, TaskCloud}, Run: func(ctx context.Context) (bool, string, error) {
			return r.ensureMachines(ctx, c, spec)
		}},
		// Not after the machines: one broken machine must not keep routes
		// from the others.
		{Name: TaskPodRoutes, DependsOn: []string{TaskNodeBootstrap}, Run: func(ctx context.Context) (bool, string, error) {
			return r.ensurePodRoutes(ctx, c, spec)
		}},
		{Name: TaskAddons, DependsOn: []string{TaskNodeBootstrap}, Run: func(ctx context.Context) (bool, string, error) {
			return r.ensureAddons(ctx, c, spec)
		}},
	}
}

// ensureMachines makes each pool have its desired number of Machines:
// repairs, autoscaling, rolling updates, then scaling to the size.
func (r *Reconciler) ensureMachines(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) (bool, string, error) {
	// Straight from the API: a cache that has not seen a just-created
	// Machine would hand its index (address, namespace, cgroup) out twice.
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	list := &lotsev1.MachineList{}
	if err := reader.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err != nil {
		return false, "", err
	}
	used := map[int32]bool{}
	byPool := map[string][]*lotsev1.Machine{}
	deletingByPool := map[string][]*lotsev1.Machine{}
	for i := range list.Items {
		m := &list.Items[i]
		used[m.Spec.Index] = true
		if m.DeletionTimestamp.IsZero() {
			byPool[m.Spec.Pool] = append(byPool[m.Spec.Pool], m)
		} else {
			deletingByPool[m.Spec.Pool] = append(deletingByPool[m.Spec.Pool], m)
		}
	}
	nextIndex := func() int32 {
		for i := int32(0); ; i++ {
			if !used[i] {
				used[i] = true
				return i
			}
		}
	}
	var waiting []string
	wanted := map[string]bool{}
	sizes := map[string]int{}
	anyAutoscaled := false
	for _, pool := range c.Spec.Workers {
		sizes[pool.Name] = r.poolDesired(c, pool)
		anyAutoscaled = anyAutoscaled || autoscaled(pool)
	}
	var tenant *tenantState
	pending := 0
	if anyAutoscaled {
		var err error
		if tenant, err = r.readTenant(ctx, spec); err != nil {
			return false, "", err
		}
	}
	if tenant != nil {
		ready := map[string]int{}
		for pool, ms := range byPool {
			for _, m := range ms {
				if machineReady(m) {
					ready[pool]++
				}
			}
		}
		up, n, err := r.scaleUp(c, tenant, sizes, ready)
		if err != nil {
			return false, "", err
		}
		pending = n
		for pool, add := range up.Add {
			r.event(c, corev1.EventTypeNormal, "ScaleUp", "Autoscale", "pool %s: %d -> %d machines for %d unschedulable pods", pool, sizes[pool], sizes[pool]+add, n)
			sizes[pool] += add
		}
		r.noteUnplaceable(c, up.Unplaceable)
	}
	for _, pool := range c.Spec.Workers {
		wanted[pool.Name] = true
		have := byPool[pool.Name]
		desired := sizes[pool.Name]
		rolling := slices.ContainsFunc(have, func(m *lotsev1.Machine) bool { return !upToDate(pool, m, c.Spec.Kubernetes.Version) })
		if autoscaled(pool) && tenant != nil && pending == 0 && !rolling && desired > int(pool.Minimum) {
			gone, why, err := r.scaleDown(ctx, pool, have, tenant, time.Now())
			if err != nil {
				return false, "", err
			}
			if gone != nil {
				if err := r.Client.Delete(ctx, gone); client.IgnoreNotFound(err) != nil {
					return false, "", err
				}
				r.event(c, corev1.EventTypeNormal, "ScaleDown", "Autoscale", "pool %s: %d -> %d machines: draining and deleting %s, unneeded since %s",
					pool.Name, desired, desired-1, gone.Name, gone.Annotations[UnneededSinceAnnotation])
				have = slices.DeleteFunc(have, func(m *lotsev1.Machine) bool { return m == gone })
				desired--
			} else if why != "" {
				log.FromContext(ctx).V(1).Info("autoscaler: nodes kept", "pool", pool.Name, "why", why)
			}
		}
		if autoscaled(pool) {
			r.desired.Store(poolKey(c, pool.Name), desired)
		}
		// Repairs first, so that replacements are created right away.
		repair, err := checkPool(pool, have, time.Now())
		if err != nil {
			return false, "", err
		}
		deleting := deletingByPool[pool.Name]
		mayRepair := repair.blocked == "" && !repairsPaused(c, time.Now())
		if len(repair.replace) > 0 && mayRepair {
			var kept []*lotsev1.Machine
			for _, m := range have {
				why, bad := repair.replace[m]
				if !bad {
					kept = append(kept, m)
					continue
				}
				if err := r.Client.Delete(ctx, m); client.IgnoreNotFound(err) != nil {
					return false, "", err
				}
				deleting = append(deleting, m)
				r.event(c, corev1.EventTypeWarning, "MachineRepaired", "Repair", "pool %s: replacing machine %s: %s", pool.Name, m.Name, why)
			}
			have = kept
		}
		plan := planPool(pool, desired, have, deleting, c.Spec.Kubernetes.Version, mayRepair)
		for _, rm := range plan.remove {
			if err := r.Client.Delete(ctx, rm.machine); client.IgnoreNotFound(err) != nil {
				return false, "", err
			}
			if rm.reason == "RollingUpdate" {
				r.event(c, corev1.EventTypeNormal, "MachineReplaced", "RollingUpdate", "pool %s: draining and deleting machine %s (version %s)", pool.Name, rm.machine.Name, rm.machine.Spec.Version)
			} else {
				r.event(c, corev1.EventTypeNormal, "MachineDeleted", "ScaleDown", "pool %s: draining and deleting machine %s", pool.Name, rm.machine.Name)
			}
			have = slices.DeleteFunc(have, func(m *lotsev1.Machine) bool { return m == rm.machine })
		}
		for _, m := range plan.update {
			before := m.DeepCopy()
			from := m.Spec.Version
			m.Spec.Version = c.Spec.Kubernetes.Version
			if err := r.Client.Patch(ctx, m, client.MergeFrom(before)); client.IgnoreNotFound(err) != nil {
				return false, "", err
			}
			r.event(c, corev1.EventTypeNormal, "MachineUpdating", "InPlaceUpdate", "pool %s: updating machine %s in place from %s to %s", pool.Name, m.Name, from, m.Spec.Version)
		}
		for range plan.create {
			m := &lotsev1.Machine{
				ObjectMeta: metav1.ObjectMeta{
					GenerateName: c.Name + "-" + pool.Name + "-",
					Namespace:    c.Namespace,
					Labels:       map[string]string{lotsev1.LabelCluster: c.Name, lotsev1.LabelPool: pool.Name},
				},
				Spec: lotsev1.MachineSpec{Cluster: c.Name, Pool: pool.Name, MachineClass: pool.MachineClass,
					Version: c.Spec.Kubernetes.Version, Index: nextIndex()},
			}
			if m.Spec.MachineClass == "" {
				m.Spec.MachineClass = lotsev1.MachineClassLocal
			}
			if err := controllerutil.SetControllerReference(c, m, r.Client.Scheme()); err != nil {
				return false, "", err
			}
			if err := r.Client.Create(ctx, m); err != nil {
				return false, "", err
			}
			have = append(have, m)
			r.event(c, corev1.EventTypeNormal, "MachineCreated", "ScaleUp", "pool %s: created machine %s", pool.Name, m.Name)
		}
		if plan.waiting != "" {
			waiting = append(waiting, "pool "+pool.Name+": "+plan.waiting)
		}
		for _, m := range have {
			if m.Spec.Stopped {
				continue // powered off on purpose: nothing to wait for
			}
			if !machineReady(m) {
				waiting = append(waiting, m.Name)
			}
		}
	}
	for pool, ms := range byPool {
		if wanted[pool] {
			continue
		}
		for _, m := range ms {
			if err := r.Client.Delete(ctx, m); client.IgnoreNotFound(err) != nil {
				return false, "", err
			}
		}
		waiting = append(waiting, "removed pool "+pool)
	}
	if len(waiting) > 0 {
		sort.Strings(waiting)
		return false, "waiting for machines: " + strings.Join(waiting, ", "), nil
	}
	return true, "", nil
}

func machineReady(m *lotsev1.Machine) bool {
	return m.Status.Phase == lotsev1.MachineRunning && meta.IsStatusConditionTrue(m.Status.Conditions, "NodeReady")
}

// cloudAfter is what the cloud controllers' task waits for: the nodes'
// network, and the cluster's own cloud controller manager if it has one.
func cloudAfter(spec controlplane.Spec) []string {
	if spec.CloudController != nil {
		return []string{TaskNodeNetwork, cloudControllerTask}
	}
	return []string{TaskNodeNetwork}
}
