package propagation

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/log"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// memberConn is the engine's connection to one member: a client and
// informers on the copies this fleet made there, whose changes queue
// their template (so the template's status follows the members').
type memberConn struct {
	version   string
	client    dynamic.Interface
	informers dynamicinformer.DynamicSharedInformerFactory
	// nodes watches the member's nodes (their addresses answer DNS for
	// NodePort Services).
	nodes cache.SharedIndexInformer
	// endpoints watches the member's EndpointSlices, indexed by their
	// Service: a member answers DNS for a Service only while a ready
	// endpoint is behind its copy.
	endpoints cache.SharedIndexInformer
	// endpointsForbidden: the member's credentials may not list or watch
	// EndpointSlices (an identity made before they were needed, a
	// kubeconfig given as is): its Services count as serving, as before.
	endpointsForbidden atomic.Bool
	// crdsForbidden: the member's credentials may not watch CRDs (an
	// identity made before the fleet propagated them): its other kinds
	// still count as synced.
	crdsForbidden atomic.Bool
	cancel        context.CancelFunc
}

var (
	nodesGVR          = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	endpointSlicesGVR = schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
)

// slimSlice keeps of an EndpointSlice what serving and the index read:
// its name, namespace, Service label and its endpoints' readiness.
func slimSlice(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown, kept as it is
	}
	var endpoints []any
	all, _, _ := unstructured.NestedSlice(u.Object, "endpoints")
	for _, ep := range all {
		m, ok := ep.(map[string]any)
		if !ok {
			continue
		}
		slim := map[string]any{}
		if ready, found, _ := unstructured.NestedBool(m, "conditions", "ready"); found {
			slim["conditions"] = map[string]any{"ready": ready}
		}
		endpoints = append(endpoints, slim)
	}
	out := &unstructured.Unstructured{Object: map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(), "endpoints": endpoints}}
	out.SetNamespace(u.GetNamespace())
	out.SetName(u.GetName())
	out.SetResourceVersion(u.GetResourceVersion())
	if svc := u.GetLabels()[discoveryv1.LabelServiceName]; svc != "" {
		out.SetLabels(map[string]string{discoveryv1.LabelServiceName: svc})
	}
	return out, nil
}

// byService indexes EndpointSlices by "namespace/service".
const byService = "service"

func serviceOfSlice(obj any) ([]string, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, nil
	}
	svc := u.GetLabels()[discoveryv1.LabelServiceName]
	if svc == "" {
		return nil, nil
	}
	return []string{u.GetNamespace() + "/" + svc}, nil
}

// conn returns the connection to a member, (re)connecting when its
// credentials changed.
func (e *Engine) conn(m Member) (*memberConn, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.connected == nil {
		e.connected = map[string]*memberConn{}
	}
	if c, ok := e.connected[m.Name]; ok {
		if c.version == m.Version {
			return c, nil
		}
		c.cancel()
		delete(e.connected, m.Name)
	}
	// Writes time out; the watches of the informers must not (a client
	// timeout would cut every watch after it).
	cfg := unthrottled(m.Config)
	cfg.Timeout = 10 * time.Second
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	watchCfg := unthrottled(m.Config)
	watchCfg.Timeout = 0
	watcher, err := dynamic.NewForConfig(watchCfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(e.ctx)
	c := &memberConn{version: m.Version, client: client, cancel: cancel}
	c.informers = dynamicinformer.NewFilteredDynamicSharedInformerFactory(watcher, 10*time.Minute, metav1.NamespaceAll,
		func(o *metav1.ListOptions) { o.LabelSelector = lotsev1.LabelFleet + "=" + e.Name })
	for _, k := range Kinds {
		k := k
		_, err := c.informers.ForResource(k.GVR).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) { e.enqueueCopy(k, obj) },
			// What the fleet itself just applied comes back as an update
			// too; only a changed status or spec (someone else's hand)
			// needs a look.
			UpdateFunc: func(old, obj any) {
				if copyChanged(old, obj) {
					e.enqueueCopy(k, obj)
				}
			},
			DeleteFunc: func(obj any) { e.enqueueCopy(k, obj) },
		})
		if err != nil {
			cancel()
			return nil, err
		}
	}
	member := m.Name
	if err := c.informers.ForResource(crdGVR).Informer().SetWatchErrorHandlerWithContext(e.forbiddenOnce(&c.crdsForbidden, member,
		"fleet: the member's credentials may not watch CustomResourceDefinitions; none is propagated there (join it again to widen its role)")); err != nil {
		cancel()
		return nil, err
	}
	c.informers.Start(ctx.Done())
	nodeFactory := dynamicinformer.NewDynamicSharedInformerFactory(watcher, 10*time.Minute)
	c.nodes = nodeFactory.ForResource(nodesGVR).Informer()
	c.endpoints = nodeFactory.ForResource(endpointSlicesGVR).Informer()
	if err := c.endpoints.AddIndexers(cache.Indexers{byService: serviceOfSlice}); err != nil {
		cancel()
		return nil, err
	}
	// Only what serving reads is kept: a member may have thousands.
	if err := c.endpoints.SetTransform(slimSlice); err != nil {
		cancel()
		return nil, err
	}
	if err := c.endpoints.SetWatchErrorHandlerWithContext(e.forbiddenOnce(&c.endpointsForbidden, member,
		"fleet: the member's credentials may not watch EndpointSlices; its Services answer DNS whether or not an endpoint is ready (join it again to widen its role)")); err != nil {
		cancel()
		return nil, err
	}
	nodeFactory.Start(ctx.Done())
	e.connected[m.Name] = c
	return c, nil
}

// forbiddenOnce is a watch error handler for what a member's credentials
// may lack: a refusal sets forbidden and is said once; other errors are
// handled as client-go does.
func (e *Engine) forbiddenOnce(forbidden *atomic.Bool, member, msg string) cache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, r *cache.Reflector, err error) {
		if apierrors.IsForbidden(err) {
			if !forbidden.Swap(true) {
				log.FromContext(e.ctx).Info(msg, "fleet", e.Fleet, "member", member)
			}
			return
		}
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}
}

// synced reports whether a member's copy informers have listed; before
// that, an absent copy proves nothing.
func (c *memberConn) synced() bool {
	for _, k := range Kinds {
		if k.GVR == crdGVR && c.crdsForbidden.Load() {
			continue
		}
		if !c.informers.ForResource(k.GVR).Informer().HasSynced() {
			return false
		}
	}
	return true
}

// copyOf returns the member's copy of a template from its cache, if this
// fleet made it.
func (e *Engine) copyOf(c *memberConn, k Kind, namespace, name string) *unstructured.Unstructured {
	id := name
	if namespace != "" {
		id = namespace + "/" + name
	}
	obj, ok, _ := c.informers.ForResource(k.GVR).Informer().GetStore().GetByKey(id)
	if !ok {
		return nil
	}
	u := obj.(*unstructured.Unstructured)
	if u.GetAnnotations()[AnnotationFleet] != e.Fleet {
		return nil
	}
	return u
}

func (e *Engine) enqueueCopy(k Kind, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u.GetAnnotations()[AnnotationFleet] != e.Fleet {
		return
	}
	ns, name, found := strings.Cut(u.GetAnnotations()[AnnotationTemplate], "/")
	if !found {
		return
	}
	e.queue.Add(key{Kind: k.ID(), Namespace: ns, Name: name})
}

// copyChanged reports whether a member's copy changed in status or spec
// (generation), or lost the fleet's marks.
func copyChanged(old, cur any) bool {
	o, ok1 := old.(*unstructured.Unstructured)
	n, ok2 := cur.(*unstructured.Unstructured)
	if !ok1 || !ok2 {
		return true
	}
	if o.GetGeneration() != n.GetGeneration() || o.GetAnnotations()[AnnotationFleet] != n.GetAnnotations()[AnnotationFleet] {
		return true
	}
	if n.GetGeneration() == 0 { // no generation (ConfigMaps, Secrets...): any change
		return o.GetResourceVersion() != n.GetResourceVersion()
	}
	os, _, _ := unstructured.NestedFieldNoCopy(o.Object, "status")
	ns, _, _ := unstructured.NestedFieldNoCopy(n.Object, "status")
	return !equality.Semantic.DeepEqual(os, ns)
}

// disconnect drops a member's connection (it left the fleet).
func (e *Engine) disconnect(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.connected[name]; ok {
		c.cancel()
		delete(e.connected, name)
	}
}

func (e *Engine) disconnectAll() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, c := range e.connected {
		c.cancel()
		delete(e.connected, name)
	}
}

// startApply registers an apply to a member; false when the member is
// leaving (it gets nothing more).
func (e *Engine) startApply(member string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.leaving[member] {
		return false
	}
	if e.applying == nil {
		e.applying = map[string]int{}
	}
	e.applying[member]++
	return true
}

func (e *Engine) endApply(member string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.applying[member]--
}

// RemoveCopies deletes every copy this fleet made in a member (the member
// leaves the fleet) and forgets the member. Applies to it stop first, and
// those in flight finish before the cleanup lists what is there.
func (e *Engine) RemoveCopies(ctx context.Context, m Member) error {
	e.mu.Lock()
	if e.leaving == nil {
		e.leaving = map[string]bool{}
	}
	e.leaving[m.Name] = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.leaving, m.Name)
		e.mu.Unlock()
	}()
	for {
		e.mu.Lock()
		n := e.applying[m.Name]
		e.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	cfg := unthrottled(m.Config)
	cfg.Timeout = 10 * time.Second
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	defer e.disconnect(m.Name)
	return RemoveCopies(ctx, m.Config, client, e.Fleet, e.Name)
}

// RemoveCopies deletes every copy a fleet made through client, namespaced
// kinds first so namespaces go last (a namespace that holds what the fleet
// did not make stays, without the fleet's marks).
func RemoveCopies(ctx context.Context, cfg *rest.Config, client dynamic.Interface, fleetKey, fleetName string) error {
	// Custom objects first, while the member still has their CRDs.
	if err := removeCustomCopies(ctx, client, fleetKey, fleetName); err != nil {
		return err
	}
	for i := len(Kinds) - 1; i >= 0; i-- {
		k := Kinds[i]
		list, err := client.Resource(k.GVR).Namespace(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: lotsev1.LabelFleet + "=" + fleetName})
		if err != nil {
			return err
		}
		for _, obj := range list.Items {
			if obj.GetAnnotations()[AnnotationFleet] != fleetKey {
				continue
			}
			switch k.Kind {
			case "Namespace":
				if err := deleteNamespaceCopy(ctx, cfg, client, fleetKey, &obj); err != nil {
					return err
				}
				continue
			case "CustomResourceDefinition":
				if err := deleteCRDCopy(ctx, client, fleetKey, fleetName, &obj); err != nil {
					return err
				}
				continue
			}
			uid := obj.GetUID()
			err := client.Resource(k.GVR).Namespace(obj.GetNamespace()).Delete(ctx, obj.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
			if err != nil && !isGone(err) {
				return err
			}
		}
	}
	return nil
}
