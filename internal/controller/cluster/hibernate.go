package cluster

// Hibernation (spec.hibernation.enabled): the workloads are drained while
// the API still answers, the machines are stopped (their disks stay, and
// with them node-local volumes), then the cloud controllers, the tenant
// watches and every control-plane process (etcd's data stays). A
// responder answers on the API endpoint so that clients fail at once
// with a message. Waking undoes each step: the responder goes, the
// control plane starts through the ordinary tasks, the machines hibernation
// stopped start, and the nodes it cordoned are uncordoned. Each step is
// read back from the objects, so a restart of lotse resumes where it was.

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/drain"
	"github.com/lotse/lotse/internal/hibernation"
	"github.com/lotse/lotse/internal/metrics"
	"github.com/lotse/lotse/internal/pki"
)

// HibernatedAnnotation marks what hibernation changed (Machines it
// stopped, Nodes it cordoned), so that waking undoes exactly that.
const HibernatedAnnotation = "lotse.dev/hibernated"

// hibernationDrainTimeout bounds the wait for pods to end before the
// machines stop anyway.
const hibernationDrainTimeout = 2 * time.Minute

// Responders answer on the API endpoints of hibernated clusters.
type Responders interface {
	Serve(key, addr, certFile, keyFile, message string) error
	Stop(key string)
}

// hibernationStarted says whether the cluster is asleep or on its way
// there or back.
func hibernationStarted(status *lotsev1.ClusterStatus) bool {
	return status.Hibernation != nil && status.Hibernation.Since != nil
}

// scheduleTimes writes the schedules' next start and end into status.
func scheduleTimes(c *lotsev1.Cluster, status *lotsev1.ClusterStatus, now time.Time) {
	var specs []lotsev1.HibernationSchedule
	if c.Spec.Hibernation != nil {
		specs = c.Spec.Hibernation.Schedules
	}
	schedules, err := hibernation.Parse(specs)
	if len(specs) == 0 || err != nil {
		if status.Hibernation != nil {
			status.Hibernation.NextStart, status.Hibernation.NextEnd = nil, nil
			if !hibernationStarted(status) {
				status.Hibernation = nil
			}
		}
		return
	}
	if status.Hibernation == nil {
		status.Hibernation = &lotsev1.HibernationStatus{}
	}
	start, end := hibernation.Next(schedules, now)
	status.Hibernation.NextStart, status.Hibernation.NextEnd = timeOrNil(start), timeOrNil(end)
}

func timeOrNil(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t.UTC().Truncate(time.Second))
	return &mt
}

// hibernate takes the cluster one step further to sleep.
func (r *Reconciler) hibernate(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus, spec controlplane.Spec) (ctrl.Result, error) {
	if status.Hibernation == nil {
		status.Hibernation = &lotsev1.HibernationStatus{}
	}
	h := status.Hibernation
	if h.Since != nil && !h.Hibernated && status.Phase != lotsev1.PhaseHibernating {
		// Left from a wake that had not finished: a new sleep begins, with
		// its own drain.
		h.Since = nil
	}
	if h.Since == nil {
		now := metav1.Now()
		h.Since = &now
		r.event(c, corev1.EventTypeNormal, "Hibernating", "Hibernate", "draining the workloads, then stopping the machines and the control plane")
	}
	requeue := time.Duration(0)
	if !h.Hibernated {
		step, wait, err := r.sleepSteps(ctx, c, spec, h.Since.Time)
		if err != nil {
			return ctrl.Result{}, err
		}
		h.Step = step
		if wait {
			requeue = time.Second
		} else {
			h.Hibernated, h.Step = true, ""
			r.event(c, corev1.EventTypeNormal, "Hibernated", "Hibernate", "no process of the cluster runs; set spec.hibernation.enabled to false to wake it")
			metrics.HibernationsTotal.WithLabelValues(c.Namespace, c.Name, "hibernate").Inc()
		}
	}
	if h.Hibernated {
		if err := r.serveHibernated(c, status, spec); err != nil {
			h.Step = "answering on the API endpoint: " + err.Error()
			requeue = 5 * time.Second
		}
	}
	phase := lotsev1.PhaseHibernating
	msg := "hibernating: " + h.Step
	if h.Hibernated {
		phase, msg = lotsev1.PhaseHibernated, "hibernated: the machines and the control plane are stopped; set spec.hibernation.enabled to false to wake the cluster"
	}
	if status.Phase != phase {
		r.event(c, corev1.EventTypeNormal, "Phase"+string(phase), "Hibernate", "cluster is %s", phase)
	}
	status.Phase = phase
	for _, typ := range []string{lotsev1.ConditionReady, lotsev1.ConditionAPIServerAvailable, lotsev1.ConditionControlPlaneHealthy, lotsev1.ConditionEveryNodeReady, lotsev1.ConditionSystemComponentsHealthy} {
		setCondition(status, c.Generation, typ, false, "Hibernated", msg)
	}
	if h.Hibernated {
		status.ObservedGeneration = c.Generation
	}
	scheduleTimes(c, status, time.Now())
	return ctrl.Result{RequeueAfter: requeue}, r.writeStatus(ctx, c, status)
}

// sleepSteps drains, stops the machines, then the rest; it says what it
// waits for (wait true) or that everything is stopped.
func (r *Reconciler) sleepSteps(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec, since time.Time) (string, bool, error) {
	list := &lotsev1.MachineList{}
	if err := r.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err != nil {
		return "", false, err
	}
	var machines []*lotsev1.Machine
	var deleting []string
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp.IsZero() {
			machines = append(machines, &list.Items[i])
		} else {
			deleting = append(deleting, list.Items[i].Name)
		}
	}
	if len(deleting) > 0 {
		// Their finalizers drain through the API: let them finish first.
		sort.Strings(deleting)
		return "waiting for machines being deleted: " + strings.Join(deleting, ", "), true, nil
	}
	var running []*lotsev1.Machine
	for _, m := range machines {
		if m.Status.Phase != lotsev1.MachineStopped || !m.Spec.Stopped {
			running = append(running, m)
		}
	}
	if len(running) > 0 {
		// Drain while the API answers; a node whose pods will not go
		// within the timeout is stopped with them.
		if time.Since(since) < hibernationDrainTimeout {
			if cs, err := r.tenantClient(spec); err == nil {
				var busy []string
				for _, m := range running {
					if m.Spec.Stopped {
						continue
					}
					done, err := cordonAndDrain(ctx, cs, m.Name)
					if err != nil {
						return "", false, err
					}
					if !done {
						busy = append(busy, m.Name)
					}
				}
				if len(busy) > 0 {
					return "draining " + strings.Join(busy, ", "), true, nil
				}
			}
		}
		var names []string
		for _, m := range running {
			names = append(names, m.Name)
			if m.Spec.Stopped {
				continue
			}
			p := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}},"spec":{"stopped":true}}`, HibernatedAnnotation))
			if err := r.Client.Patch(ctx, m, client.RawPatch(types.MergePatchType, p)); client.IgnoreNotFound(err) != nil {
				return "", false, err
			}
		}
		sort.Strings(names)
		return "stopping machines " + strings.Join(names, ", "), true, nil
	}
	ref := refOf(c)
	if r.Addons != nil {
		r.Addons.Forget(ref.Key())
	}
	if r.Cloud != nil {
		r.Cloud.Stop(ref)
	}
	if r.Tenants != nil {
		r.Tenants.Forget(ref.Key())
	}
	if err := r.Backend.Stop(ctx, spec.Key); err != nil {
		return "stopping the control plane: " + err.Error(), true, nil
	}
	return "", false, nil
}

// cordonAndDrain cordons a node (marking it, unless it was cordoned
// already) and deletes its pods but DaemonSet and mirror pods: a sleeping
// cluster honours no disruption budget. It reports whether the node is
// empty.
func cordonAndDrain(ctx context.Context, cs kubernetes.Interface, nodeName string) (bool, error) {
	node, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if !node.Spec.Unschedulable && node.Annotations[HibernatedAnnotation] == "" {
		p := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:"cordoned"}}}`, HibernatedAnnotation))
		if _, err := cs.CoreV1().Nodes().Patch(ctx, nodeName, types.MergePatchType, p, metav1.PatchOptions{}); err != nil {
			return false, err
		}
	}
	drained, _, _, err := drain.Node(ctx, cs, nodeName, true)
	return drained, err
}

// serveHibernated answers on the cluster's API endpoint.
func (r *Reconciler) serveHibernated(c *lotsev1.Cluster, status *lotsev1.ClusterStatus, spec controlplane.Spec) error {
	if r.Responders == nil || status.Endpoint == "" {
		return nil
	}
	u, err := url.Parse(status.Endpoint)
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err != nil || !ip.IsLoopback() {
		// The endpoint is a seed's load balancer, not this host's to
		// answer on; its API is simply down while hibernated.
		return nil
	}
	p := r.Backend.PKI(spec.Key)
	msg := fmt.Sprintf("cluster %s/%s is hibernated: set spec.hibernation.enabled to false (or run `lotse cluster wake %s`) to wake it", c.Namespace, c.Name, c.Name)
	return r.Responders.Serve(spec.Key, u.Host, p.Cert(pki.APIServerName), p.Key(pki.APIServerName), msg)
}

// wakeUp undoes hibernation's changes as far as they can be now: the
// responder goes (the API server needs the port), stopped machines
// start; nodes are uncordoned once the API answers. It reports whether
// everything is undone.
func (r *Reconciler) wakeUp(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) (bool, error) {
	if r.Responders != nil {
		r.Responders.Stop(spec.Key)
	}
	machines, err := r.clusterMachines(ctx, c)
	if err != nil {
		return false, err
	}
	for _, m := range machines {
		if m.Annotations[HibernatedAnnotation] == "" {
			continue
		}
		p := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:null}},"spec":{"stopped":false}}`, HibernatedAnnotation))
		if err := r.Client.Patch(ctx, m, client.RawPatch(types.MergePatchType, p)); client.IgnoreNotFound(err) != nil {
			return false, err
		}
	}
	cs, err := r.tenantClient(spec)
	if err != nil {
		return false, nil
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, nil // the API server is starting
	}
	for _, n := range nodes.Items {
		if n.Annotations[HibernatedAnnotation] == "" {
			continue
		}
		p := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:null}},"spec":{"unschedulable":null}}`, HibernatedAnnotation))
		if _, err := cs.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, p, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return false, err
		}
	}
	return true, nil
}

// clusterMachines lists the cluster's machines that are not being deleted.
func (r *Reconciler) clusterMachines(ctx context.Context, c *lotsev1.Cluster) ([]*lotsev1.Machine, error) {
	list := &lotsev1.MachineList{}
	if err := r.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err != nil {
		return nil, err
	}
	var out []*lotsev1.Machine
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp.IsZero() {
			out = append(out, &list.Items[i])
		}
	}
	return out, nil
}
