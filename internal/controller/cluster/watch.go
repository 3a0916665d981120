package cluster

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/addons"
	"github.com/lotse/lotse/internal/controlplane"
)

// tenantWatches tracks the clusters whose tenant objects are watched.
type tenantWatches struct {
	mu      sync.Mutex
	watched map[string]context.Context // key -> the watch's context
}

// watchTenant makes sure a cluster with nodes is watched, through the one
// informer factory per cluster (started with the first watch, stopped when
// the cluster is forgotten): a node becoming Ready or not reconciles the
// cluster at once, instead of at the next periodic look. In a cluster
// without egress, pods are watched for pulls that cannot work. (The addon
// keeper watches the addons itself and reports changes of their health.)
func (r *Reconciler) watchTenant(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) error {
	kc, err := r.Backend.AdminKubeconfig(spec)
	if err != nil {
		return err
	}
	factory, watchCtx, err := r.Tenants.Informers(spec.Key, kc)
	if err != nil || factory == nil {
		return err
	}
	r.watches.mu.Lock()
	defer r.watches.mu.Unlock()
	if r.watches.watched == nil {
		r.watches.watched = map[string]context.Context{}
	}
	if w, ok := r.watches.watched[spec.Key]; ok && w == watchCtx {
		return nil // already watching with this client
	}
	ref := refOf(c)
	enqueue := func() { r.enqueue(ref.Namespace, ref.Name) }
	nodes := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { enqueue() },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Node)
			n, ok2 := cur.(*corev1.Node)
			if ok1 && ok2 && nodeReadyStatus(o) != nodeReadyStatus(n) {
				enqueue()
			}
		},
		DeleteFunc: func(any) { enqueue() },
	}
	handlers := []struct {
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
	}{
		{factory.Core().V1().Nodes().Informer(), nodes},
		// New and deleted namespaces change the default policies.
		{factory.Core().V1().Namespaces().Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { enqueue() },
			DeleteFunc: func(any) { enqueue() },
		}},
	}
	// Unschedulable pods may make a pool grow (and pods that go, shrink).
	handlers = append(handlers, struct {
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
	}{factory.Core().V1().Pods().Informer(), cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if p, ok := obj.(*corev1.Pod); ok && unschedulable(p) {
				enqueue()
			}
		},
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Pod)
			n, ok2 := cur.(*corev1.Pod)
			if ok1 && ok2 && unschedulable(n) && !unschedulable(o) {
				enqueue()
			}
		},
	}}, struct {
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
	}{factory.Apps().V1().DaemonSets().Informer(), cache.ResourceEventHandlerFuncs{}})
	if c.Spec.Networking.Egress != lotsev1.EgressAllow {
		cs, err := r.Tenants.For(spec.Key, kc)
		if err != nil {
			return err
		}
		handlers = append(handlers, struct {
			informer cache.SharedIndexInformer
			handler  cache.ResourceEventHandler
		}{factory.Core().V1().Pods().Informer(), imagePullHandler(watchCtx, cs, log.FromContext(ctx).WithValues("cluster", spec.Key))})
	}
	for _, h := range handlers {
		if _, err := h.informer.AddEventHandler(h.handler); err != nil {
			return err
		}
	}
	factory.Start(watchCtx.Done())
	r.watches.watched[spec.Key] = watchCtx
	return nil
}

// tenantInformers is the cluster's shared informer factory (nil while the
// tenant cannot be reached).
func (r *Reconciler) tenantInformers(spec controlplane.Spec) (informers.SharedInformerFactory, error) {
	kc, err := r.Backend.AdminKubeconfig(spec)
	if err != nil {
		return nil, err
	}
	factory, _, err := r.Tenants.Informers(spec.Key, kc)
	return factory, err
}

// tenantNamespaces lists a cluster's namespaces other than the system
// ones, from the watch's cache.
func (r *Reconciler) tenantNamespaces(ctx context.Context, spec controlplane.Spec) ([]string, error) {
	factory, err := r.tenantInformers(spec)
	if err != nil || factory == nil {
		return nil, err
	}
	inf := factory.Core().V1().Namespaces()
	syncCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), inf.Informer().HasSynced) {
		return nil, fmt.Errorf("namespaces of %s not listed yet", spec.Key)
	}
	list, err := inf.Lister().List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ns := range list {
		if !slices.Contains(addons.SystemNamespaces, ns.Name) && ns.DeletionTimestamp.IsZero() {
			out = append(out, ns.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

func nodeReadyStatus(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

// enqueue asks for a reconcile of a cluster; when one is queued already,
// that one will see the change.
func (r *Reconciler) enqueue(namespace, name string) {
	if r.ProcessEvents == nil {
		return
	}
	c := &lotsev1.Cluster{}
	c.Namespace, c.Name = namespace, name
	select {
	case r.ProcessEvents <- event.GenericEvent{Object: c}:
	default: // the channel is full: reconciles are queued already
	}
}
