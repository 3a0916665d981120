package cluster

// Pool autoscaling (see internal/autoscaler for the decisions): pools with
// minimum < maximum grow when pods are unschedulable and would fit their
// nodes, and shrink by nodes that stayed unneeded. A pool's size is kept
// in status.workers[].desired (and in memory between status writes), so a
// restart of lotse continues from it.

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/autoscaler"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/machine"
)

// UnneededSinceAnnotation on a Machine records since when its node has
// been unneeded (RFC 3339); it survives restarts of lotse.
const UnneededSinceAnnotation = "lotse.dev/unneeded-since"

// Defaults of spec.workers[].autoscaler (the CRD sets them too).
const (
	defaultUnneededTime = 10 * time.Minute
	defaultThreshold    = 50
)

func autoscaled(p lotsev1.WorkerPool) bool { return p.Minimum < p.Maximum }

// poolKey names a pool of one cluster object: by its UID, so that a new
// cluster of the same name never inherits a deleted one's sizes.
func poolKey(c *lotsev1.Cluster, pool string) string { return string(c.UID) + "/" + pool }

// forgetAutoscaling drops what autoscaling remembered of a deleted cluster.
func (r *Reconciler) forgetAutoscaling(c *lotsev1.Cluster) {
	prefix := poolKey(c, "")
	r.desired.Range(func(k, _ any) bool {
		if strings.HasPrefix(k.(string), prefix) {
			r.desired.Delete(k)
		}
		return true
	})
	r.unplaceable.Delete(refOf(c).Key())
}

// poolDesired is a pool's size before this reconcile's decisions: its
// minimum without autoscaling, else the last decided size, within bounds.
func (r *Reconciler) poolDesired(c *lotsev1.Cluster, pool lotsev1.WorkerPool) int {
	if !autoscaled(pool) {
		return int(pool.Minimum)
	}
	n := int(pool.Minimum)
	if v, ok := r.desired.Load(poolKey(c, pool.Name)); ok {
		n = v.(int)
	} else {
		for _, ws := range c.Status.Workers {
			if ws.Name == pool.Name && ws.Desired > 0 {
				n = int(ws.Desired)
			}
		}
	}
	return min(max(n, int(pool.Minimum)), int(pool.Maximum))
}

// tenantState is what autoscaling reads from the tenant cluster (the
// watch's caches).
type tenantState struct {
	pods       []*corev1.Pod
	nodes      map[string]*corev1.Node
	daemonSets []*corev1.Pod // a pod of each DaemonSet's template
}

func (r *Reconciler) readTenant(ctx context.Context, spec controlplane.Spec) (*tenantState, error) {
	factory, err := r.tenantInformers(spec)
	if err != nil || factory == nil {
		return nil, err
	}
	pods, nodes, dss := factory.Core().V1().Pods(), factory.Core().V1().Nodes(), factory.Apps().V1().DaemonSets()
	st := &tenantState{nodes: map[string]*corev1.Node{}}
	if !pods.Informer().HasSynced() || !nodes.Informer().HasSynced() || !dss.Informer().HasSynced() {
		return nil, nil // the watch is starting; the next look decides
	}
	if st.pods, err = pods.Lister().List(labels.Everything()); err != nil {
		return nil, err
	}
	ns, err := nodes.Lister().List(labels.Everything())
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		st.nodes[n.Name] = n
	}
	list, err := dss.Lister().List(labels.Everything())
	if err != nil {
		return nil, err
	}
	for _, ds := range list {
		st.daemonSets = append(st.daemonSets, &corev1.Pod{ObjectMeta: ds.Spec.Template.ObjectMeta, Spec: ds.Spec.Template.Spec})
	}
	return st, nil
}

// unschedulable says whether the scheduler found no node for a pod.
func unschedulable(p *corev1.Pod) bool {
	if p.Spec.NodeName != "" || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return true
		}
	}
	return false
}

// template is what a new node of the pool looks like.
func poolTemplate(c *lotsev1.Cluster, pool lotsev1.WorkerPool, index int32) (autoscaler.Template, error) {
	className := pool.MachineClass
	if className == "" {
		className = lotsev1.MachineClassLocal
	}
	class, err := machine.LookupClass(className)
	if err != nil {
		return autoscaler.Template{}, err
	}
	region := pool.Region
	if region == "" {
		region = c.Spec.Region
	}
	l := map[string]string{
		lotsev1.LabelCluster: c.Name, lotsev1.LabelPool: pool.Name,
		"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
		"node.kubernetes.io/instance-type": className, "topology.kubernetes.io/region": region,
	}
	if zone := pool.Zone(index); zone != "" {
		l["topology.kubernetes.io/zone"] = zone
	}
	for k, v := range pool.Labels {
		l[k] = string(v)
	}
	t := autoscaler.Template{Labels: l, Allocatable: autoscaler.FromList(class.Allocatable(machine.Host()))}
	for _, taint := range pool.Taints {
		t.Taints = append(t.Taints, corev1.Taint{Key: taint.Key, Value: taint.Value, Effect: corev1.TaintEffect(taint.Effect)})
	}
	return t, nil
}

// scaleUp decides how many machines each autoscaled pool adds for the
// cluster's unschedulable pods.
func (r *Reconciler) scaleUp(c *lotsev1.Cluster, st *tenantState, desired, ready map[string]int) (autoscaler.UpPlan, int, error) {
	var pending []*corev1.Pod
	for _, p := range st.pods {
		if unschedulable(p) {
			pending = append(pending, p)
		}
	}
	if len(pending) == 0 {
		return autoscaler.UpPlan{}, 0, nil
	}
	var groups []autoscaler.Group
	for _, pool := range c.Spec.Workers {
		if !autoscaled(pool) {
			continue
		}
		t, err := poolTemplate(c, pool, int32(desired[pool.Name]))
		if err != nil {
			return autoscaler.UpPlan{}, 0, err
		}
		var overhead autoscaler.Requests
		for _, ds := range st.daemonSets {
			if ok, _ := autoscaler.Schedulable(ds, t); ok {
				overhead = overhead.Add(autoscaler.PodRequests(ds))
			}
		}
		groups = append(groups, autoscaler.Group{Name: pool.Name, Template: t, Overhead: overhead, Room: int(pool.Maximum) - desired[pool.Name],
			Upcoming: max(0, desired[pool.Name]-ready[pool.Name])})
	}
	return autoscaler.ScaleUp(pending, groups, st.nodeList()), len(pending), nil
}

// nodeList is the tenant's nodes with their pods, as the autoscaler sees them.
func (st *tenantState) nodeList() []autoscaler.Node {
	byNode := map[string][]*corev1.Pod{}
	for _, p := range st.pods {
		if p.Spec.NodeName != "" {
			byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p)
		}
	}
	var all []autoscaler.Node
	for name, n := range st.nodes {
		all = append(all, autoscaler.Node{Name: name, Pods: byNode[name], Ready: nodeReadyStatus(n) == corev1.ConditionTrue, Unschedulable: n.Spec.Unschedulable,
			Template: autoscaler.Template{Labels: n.Labels, Taints: n.Spec.Taints, Allocatable: autoscaler.FromList(n.Status.Allocatable)}})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	return all
}

// scaleDown finds the machine of an autoscaled pool to remove now, if any:
// one whose node has been unneeded for the pool's scaleDownUnneededTime.
// It records and clears the unneeded-since annotations on the way.
func (r *Reconciler) scaleDown(ctx context.Context, pool lotsev1.WorkerPool, have []*lotsev1.Machine, st *tenantState, now time.Time) (*lotsev1.Machine, string, error) {
	unneededTime := defaultUnneededTime
	if s := pool.Autoscaler.ScaleDownUnneededTime; s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, "", fmt.Errorf("pool %s: autoscaler.scaleDownUnneededTime: %w", pool.Name, err)
		}
		unneededTime = d
	}
	threshold := float64(defaultThreshold) / 100
	if pool.Autoscaler.ScaleDownUtilizationThreshold > 0 {
		threshold = float64(pool.Autoscaler.ScaleDownUtilizationThreshold) / 100
	}
	all := st.nodeList()
	byNode := map[string]autoscaler.Node{}
	for _, n := range all {
		byNode[n.Name] = n
	}
	var pick *lotsev1.Machine
	var pickSince time.Time
	var why []string
	for _, m := range have {
		n, ok := byNode[m.Name]
		if !ok || !machineReady(m) || m.Spec.Stopped {
			continue
		}
		unneeded := false
		switch u := autoscaler.Utilization(n); {
		case now.Sub(m.CreationTimestamp.Time) < unneededTime:
		case u >= threshold:
		default:
			ok, reason := autoscaler.Removable(n, all)
			unneeded = ok
			if !ok {
				why = append(why, m.Name+": "+reason)
			}
		}
		since, marked := m.Annotations[UnneededSinceAnnotation]
		switch {
		case unneeded && !marked:
			if err := r.annotate(ctx, m, now.UTC().Format(time.RFC3339)); err != nil {
				return nil, "", err
			}
		case !unneeded && marked:
			if err := r.annotate(ctx, m, ""); err != nil {
				return nil, "", err
			}
		case unneeded:
			t, err := time.Parse(time.RFC3339, since)
			if err == nil && now.Sub(t) >= unneededTime && (pick == nil || t.Before(pickSince)) {
				pick, pickSince = m, t
			}
		}
	}
	return pick, strings.Join(why, "; "), nil
}

// annotate sets (or with "" removes) a machine's unneeded-since mark.
func (r *Reconciler) annotate(ctx context.Context, m *lotsev1.Machine, since string) error {
	before := m.DeepCopy()
	if since == "" {
		delete(m.Annotations, UnneededSinceAnnotation)
	} else {
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		m.Annotations[UnneededSinceAnnotation] = since
	}
	return client.IgnoreNotFound(r.Client.Patch(ctx, m, client.MergeFrom(before)))
}

// noteUnplaceable remembers the pending pods no pool can take, and
// records an event when that set changes.
func (r *Reconciler) noteUnplaceable(c *lotsev1.Cluster, pods map[string]string) {
	key := refOf(c).Key()
	var lines []string
	for p, why := range pods {
		lines = append(lines, p+": "+why)
	}
	sort.Strings(lines)
	msg := strings.Join(lines, "; ")
	prev, _ := r.unplaceable.Load(key)
	r.unplaceable.Store(key, msg)
	if msg != "" && prev != msg {
		r.event(c, corev1.EventTypeWarning, "NoScaleUp", "Autoscale", "%d pending pods fit no pool: %s", len(lines), truncate(msg, 900))
	}
}
