// Package propagation is a fleet's engine: it watches the templates and
// policies in the fleet's control plane, places each template on members
// (package placement), writes a binding that says where it went, applies
// the member copies with server-side apply, removes copies a member should
// no longer carry, and aggregates the copies' status into the binding and
// the template. It is level-triggered: every pass starts from what the
// fleet and the members hold now.
package propagation

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/log"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
	"github.com/lotse/lotse/internal/federation/placement"
)

// FieldManager owns the fields the fleet sets in member copies.
const FieldManager = "lotse-fleet"

// AnnotationFleet on a member copy names the fleet (namespace/name) that
// made it; AnnotationTemplate the template (namespace/name) it copies.
const (
	AnnotationFleet    = "lotse.dev/fleet-key"
	AnnotationTemplate = "lotse.dev/template"
	// AnnotationDigest on a member copy is the digest of what the fleet
	// applied.
	AnnotationDigest = "lotse.dev/fleet-digest"
	// LabelPropagate "false" on a template keeps it in the fleet.
	LabelPropagate = "lotse.dev/propagate"
)

// Member is a fleet member as the engine needs it.
type Member struct {
	placement.Member
	// Ready: the member answers and can run work; only ready members get
	// new work.
	Ready bool
	// Reachable: the member's API answers (it may still not be ready, e.g.
	// with no Ready node); copies are removed only from reachable members.
	Reachable bool
	// NotReadySince is when a member that is not ready stopped being so.
	NotReadySince time.Time
	// Config reaches the member's API server.
	Config *rest.Config
	// Version identifies Config; a new version reconnects.
	Version string
	// Pull: the member's agent applies its copies from Works in the
	// fleet (Config is nil: the engine never reaches the member).
	Pull bool
}

// Members tells the engine the fleet's current members.
type Members interface {
	Members(ctx context.Context) ([]Member, error)
}

// Engine propagates one fleet's templates.
type Engine struct {
	// Fleet is the fleet's key (namespace/name) and Name the value of
	// the lotse.dev/fleet label on member copies.
	Fleet, Name string
	// Config reaches the fleet's API server.
	Config  *rest.Config
	Members Members
	// Event, when set, reports what the engine did to a template.
	Event func(obj *unstructured.Unstructured, warning bool, reason, message string)
	// Now is the clock (tests set it).
	Now func() time.Time

	fleet     dynamic.Interface
	informers dynamicinformer.DynamicSharedInformerFactory
	queue     workqueue.TypedRateLimitingInterface[key]

	mu        sync.Mutex
	connected map[string]*memberConn
	ctx       context.Context
	// leaving members get no more copies; applying counts the applies
	// in flight per member, so that a member's cleanup starts after them.
	leaving  map[string]bool
	applying map[string]int
	// applied: member/kind/namespace/name -> the copy's generation after
	// the engine's last apply.
	applied map[string]string

	// custom: the kinds the fleet's CRDs define, by ID (custom.go).
	customMu sync.RWMutex
	custom   map[string]*customKind
}

// key is a template in the queue.
type key struct {
	Kind            string // the kind's ID (Kind.ID)
	Namespace, Name string
}

// New makes a fleet's engine: its client, queue and informers (not yet
// started), so that ResyncAll may be called from any goroutine as soon as
// New returns.
func New(fleetKey, name string, cfg *rest.Config, members Members, event func(*unstructured.Unstructured, bool, string, string)) (*Engine, error) {
	e := &Engine{Fleet: fleetKey, Name: name, Config: cfg, Members: members, Event: event}
	var err error
	if e.fleet, err = dynamic.NewForConfig(unthrottled(e.Config)); err != nil {
		return nil, err
	}
	e.queue = workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[key](50*time.Millisecond, 30*time.Second))
	e.informers = dynamicinformer.NewDynamicSharedInformerFactory(e.fleet, 10*time.Minute)
	for _, k := range Kinds {
		k := k
		_, err := e.informers.ForResource(k.GVR).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { e.enqueueObject(k, obj) },
			UpdateFunc: func(_, obj any) { e.enqueueObject(k, obj) },
			DeleteFunc: func(obj any) { e.enqueueObject(k, obj) },
		})
		if err != nil {
			return nil, err
		}
	}
	// A CRD in the fleet also brings the objects of its kind.
	_, err = e.informers.ForResource(crdGVR).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { e.crdChanged(obj, false) },
		UpdateFunc: func(_, obj any) { e.crdChanged(obj, false) },
		DeleteFunc: func(obj any) { e.crdChanged(obj, true) },
	})
	if err != nil {
		return nil, err
	}
	policyHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { e.ResyncAll() },
		UpdateFunc: func(any, any) { e.ResyncAll() },
		DeleteFunc: func(any) { e.ResyncAll() },
	}
	for _, r := range []string{"propagationpolicies", "clusterpropagationpolicies", "overridepolicies", "clusteroverridepolicies"} {
		if _, err := e.informers.ForResource(policyv1.GroupVersion.WithResource(r)).Informer().AddEventHandler(policyHandler); err != nil {
			return nil, err
		}
	}
	// The Works of pull-mode members: what their agents report queues
	// the template.
	_, err = e.informers.ForResource(worksGVR).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { e.workChanged(nil, obj) },
		UpdateFunc: e.workChanged,
		DeleteFunc: func(obj any) { e.workChanged(nil, obj) },
	})
	if err != nil {
		return nil, err
	}
	// Bindings whose template is gone (deleted while Lotse was down) are
	// found through their own informers.
	for _, r := range []string{"resourcebindings", "clusterresourcebindings"} {
		_, err := e.informers.ForResource(workv1.GroupVersion.WithResource(r)).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { e.enqueueBinding(obj); e.bindingChanged(obj) },
			UpdateFunc: func(_, obj any) { e.bindingChanged(obj) },
			DeleteFunc: func(obj any) { e.bindingChanged(obj) },
		})
		if err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Run starts the engine and blocks until ctx ends; it runs once.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	e.ctx = ctx
	e.mu.Unlock()
	defer e.queue.ShutDown()
	e.informers.Start(ctx.Done())
	defer e.informers.Shutdown()
	defer e.stopCustom()
	for r, ok := range e.informers.WaitForCacheSync(ctx.Done()) {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("the fleet's %s did not sync", r.Resource)
		}
	}
	defer e.disconnectAll()

	const workers = 4
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e.processNext(ctx) {
			}
		}()
	}
	// Members come and go and change health; a slow periodic pass keeps
	// every template current even if a notification was missed.
	ticker := time.NewTicker(30 * time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			e.queue.ShutDown()
			wg.Wait()
			return nil
		case <-ticker.C:
			e.ResyncAll()
		}
	}
}

// ResyncAll queues every template, e.g. when a member joins or changes
// health.
func (e *Engine) ResyncAll() {
	for _, k := range append(slices.Clone(Kinds), e.customKinds()...) {
		if store := e.store(k); store != nil {
			for _, obj := range store.List() {
				e.enqueueObject(k, obj)
			}
		}
	}
}

func (e *Engine) enqueueObject(k Kind, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	e.queue.Add(key{Kind: k.ID(), Namespace: u.GetNamespace(), Name: u.GetName()})
}

func (e *Engine) enqueueBinding(obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	var b workv1.ResourceBinding
	if err := fromUnstructured(u, &b); err != nil {
		return
	}
	e.queue.Add(key{Kind: kindID(b.Spec.Resource.APIVersion, b.Spec.Resource.Kind), Namespace: b.Spec.Resource.Namespace, Name: b.Spec.Resource.Name})
}

// bindingChanged: a workload that moved takes its dependencies along.
func (e *Engine) bindingChanged(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	kind, _, _ := unstructured.NestedString(u.Object, "spec", "resource", "kind")
	if slices.Contains(workloadKinds, kind) {
		e.enqueueDependencies(u.GetNamespace())
	}
}

func (e *Engine) processNext(ctx context.Context) bool {
	k, shutdown := e.queue.Get()
	if shutdown {
		return false
	}
	defer e.queue.Done(k)
	res, err := e.sync(ctx, k)
	switch {
	case err != nil:
		log.FromContext(ctx).V(1).Info("fleet: sync failed; retrying", "fleet", e.Fleet, "kind", k.Kind, "namespace", k.Namespace, "name", k.Name, "error", err.Error())
		e.queue.AddRateLimited(k)
	case res.retry:
		// An apply failed (a conflict, a member refusing): again with
		// growing pauses; a member's change queues it sooner.
		e.queue.AddRateLimited(k)
	default:
		e.queue.Forget(k)
		if res.after > 0 {
			e.queue.AddAfter(k, res.after)
		}
	}
	return true
}

// template returns a template from the fleet's cache (nil when gone).
func (e *Engine) template(k Kind, namespace, name string) *unstructured.Unstructured {
	store := e.store(k)
	if store == nil {
		return nil
	}
	id := name
	if namespace != "" {
		id = namespace + "/" + name
	}
	obj, ok, _ := store.GetByKey(id)
	if !ok {
		return nil
	}
	return obj.(*unstructured.Unstructured)
}

// policies lists the fleet's policies from the cache.
func (e *Engine) policies() (namespaced []policyv1.PropagationPolicy, cluster []policyv1.ClusterPropagationPolicy) {
	for _, obj := range e.informers.ForResource(policyv1.GroupVersion.WithResource("propagationpolicies")).Informer().GetStore().List() {
		var p policyv1.PropagationPolicy
		if fromUnstructured(obj.(*unstructured.Unstructured), &p) == nil {
			namespaced = append(namespaced, p)
		}
	}
	for _, obj := range e.informers.ForResource(policyv1.GroupVersion.WithResource("clusterpropagationpolicies")).Informer().GetStore().List() {
		var p policyv1.ClusterPropagationPolicy
		if fromUnstructured(obj.(*unstructured.Unstructured), &p) == nil {
			cluster = append(cluster, p)
		}
	}
	return namespaced, cluster
}

// overridesFor returns the overriders that apply to a template's copy in a
// member: those of ClusterOverridePolicies, then those of the template
// namespace's OverridePolicies (so the namespace's win), each by name.
func (e *Engine) overridesFor(kind Kind, tmpl *unstructured.Unstructured, member placement.Member) ([]policyv1.Overriders, error) {
	type named struct {
		name string
		spec policyv1.OverrideSpec
	}
	var wide, own []named
	for _, obj := range e.informers.ForResource(policyv1.GroupVersion.WithResource("clusteroverridepolicies")).Informer().GetStore().List() {
		var p policyv1.ClusterOverridePolicy
		if fromUnstructured(obj.(*unstructured.Unstructured), &p) == nil {
			wide = append(wide, named{p.Name, p.Spec})
		}
	}
	if tmpl.GetNamespace() != "" {
		for _, obj := range e.informers.ForResource(policyv1.GroupVersion.WithResource("overridepolicies")).Informer().GetStore().List() {
			var p policyv1.OverridePolicy
			if fromUnstructured(obj.(*unstructured.Unstructured), &p) == nil && p.Namespace == tmpl.GetNamespace() {
				own = append(own, named{p.Name, p.Spec})
			}
		}
	}
	var out []policyv1.Overriders
	for i, list := range [][]named{wide, own} {
		sort.Slice(list, func(a, b int) bool { return list[a].name < list[b].name })
		policyNamespace := ""
		if i == 1 {
			policyNamespace = tmpl.GetNamespace()
		}
		for _, p := range list {
			if len(p.spec.ResourceSelectors) > 0 && !selects(p.spec.ResourceSelectors, kind, tmpl, policyNamespace) {
				continue
			}
			for _, rule := range p.spec.OverrideRules {
				ok, err := placement.Matches(member, rule.TargetCluster)
				if err != nil {
					return nil, fmt.Errorf("override policy %s: %w", p.name, err)
				}
				if ok {
					out = append(out, rule.Overriders)
				}
			}
		}
	}
	return out, nil
}

// unthrottled lifts client-go's default client-side limit (5 requests/s),
// which would make every propagation wait: the engine's requests are
// bounded by its workers, and the API servers apply their own fairness.
func unthrottled(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = 500, 1000
	return c
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Engine) event(obj *unstructured.Unstructured, warning bool, reason, format string, args ...any) {
	if e.Event != nil && obj != nil {
		e.Event(obj, warning, reason, fmt.Sprintf(format, args...))
	}
}
