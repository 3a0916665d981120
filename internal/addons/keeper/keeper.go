// Package keeper keeps the addons of tenant clusters as declared. It applies
// each object with server-side apply under Lotse's field manager, then
// watches the objects in the tenant cluster: a deleted object is recreated
// and a field Lotse owns that someone else changed is set back at once;
// objects no longer declared are deleted; an object annotated
// lotse.dev/ignore is left alone and reported. Nothing is applied again
// while neither the declaration nor the object changed.
//
// An edit is recognised by its trace in managedFields: an update by anyone
// else of a field Lotse applied moves that field out of Lotse's entry, so
// Lotse's entry no longer equals the one recorded after Lotse's own apply.
package keeper

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/lotse/lotse/internal/addons"
)

// EventFunc reports what the keeper did to a cluster's addons (an event on
// the Cluster object): eventType is Normal or Warning; action names what
// was done. Recorders that merge repeated events into a series key them by
// reason and action but not by message, so each kind of repair has its own
// action: otherwise a revert soon after a recreation would count as a
// repeat of it and its message would be lost.
type EventFunc func(eventType, reason, action, message string)

// Actions of the keeper's events.
const (
	ActionIgnore   = "IgnoreAddonObject"
	ActionRemove   = "RemoveAddonObject"
	ActionRecreate = "RecreateAddonObject"
	ActionRevert   = "RevertAddonObject"
)

// State is the observed state of one addon.
type State struct {
	Name    string
	Healthy bool
	// Message says what is (not) available.
	Message string
	// Ignored lists the addon's objects left alone ("Kind namespace/name").
	Ignored []string
}

// Keeper keeps the addons of every tenant cluster.
type Keeper struct {
	// Changed is called (from the keeper's own goroutines) when an addon's
	// health changes, so the cluster's status can follow.
	Changed func(key string)

	mu       sync.Mutex
	clusters map[string]*clusterKeeper
}

// ref names one object in a tenant cluster.
type ref struct {
	gvr       schema.GroupVersionResource
	kind      string
	namespace string
	name      string
}

func (r ref) String() string {
	if r.namespace == "" {
		return r.kind + " " + r.name
	}
	return r.kind + " " + r.namespace + "/" + r.name
}

type declared struct {
	addon string
	obj   *unstructured.Unstructured
	json  []byte
	hash  string
}

type applied struct {
	hash string
	// fields is Lotse's managedFields entry right after Lotse applied.
	fields string
}

type clusterKeeper struct {
	key     string
	dyn     dynamic.Interface
	cancel  context.CancelFunc
	stores  map[schema.GroupVersionResource]cache.SharedIndexInformer
	synced  []cache.InformerSynced
	queue   workqueue.TypedRateLimitingInterface[ref]
	changed func()

	mu       sync.Mutex // serialises syncs and guards the fields below
	desired  map[ref]*declared
	addons   []string // declared addon names, in order
	applied  map[ref]applied
	ignored  map[ref]bool
	events   EventFunc
	health   map[string]State
	syncErrs map[ref]error
}

// Ensure declares a cluster's addons, applies what is missing or changed,
// and returns the state of each addon. The first call for a cluster (or for
// a new client of it) starts the watches that repair the objects between
// calls. Ensure is cheap when nothing changed: it applies nothing.
func (k *Keeper) Ensure(ctx context.Context, key string, dyn dynamic.Interface, set []addons.Addon, events EventFunc) ([]State, error) {
	ck := k.clusterFor(key, dyn)
	desired := map[ref]*declared{}
	var names []string
	for _, a := range set {
		names = append(names, a.Name)
		for _, o := range a.Objects {
			r, err := refOf(o)
			if err != nil {
				return nil, err
			}
			data, err := o.MarshalJSON()
			if err != nil {
				return nil, err
			}
			sum := sha256.Sum256(data)
			desired[r] = &declared{addon: a.Name, obj: o, json: data, hash: hex.EncodeToString(sum[:])}
		}
	}
	ck.mu.Lock()
	ck.desired, ck.addons, ck.events = desired, names, events
	ck.mu.Unlock()

	syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), ck.synced...) {
		return nil, fmt.Errorf("watching the addons of %s: caches not synced", key)
	}
	var errs []string
	for _, r := range ck.refs() {
		if err := ck.sync(ctx, r); err != nil {
			errs = append(errs, err.Error())
		}
	}
	states := ck.states()
	if len(errs) > 0 {
		sort.Strings(errs)
		return states, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return states, nil
}

// States returns the last known state of a cluster's addons.
func (k *Keeper) States(key string) ([]State, bool) {
	k.mu.Lock()
	ck := k.clusters[key]
	k.mu.Unlock()
	if ck == nil {
		return nil, false
	}
	return ck.states(), true
}

// Forget stops keeping a cluster's addons (the cluster is gone).
func (k *Keeper) Forget(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if ck, ok := k.clusters[key]; ok {
		ck.stop()
		delete(k.clusters, key)
	}
}

func (k *Keeper) clusterFor(key string, dyn dynamic.Interface) *clusterKeeper {
	k.mu.Lock()
	defer k.mu.Unlock()
	if ck, ok := k.clusters[key]; ok && ck.dyn == dyn {
		return ck
	} else if ok {
		ck.stop() // a new client (new kubeconfig): watch with it instead
	}
	if k.clusters == nil {
		k.clusters = map[string]*clusterKeeper{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ck := &clusterKeeper{
		key: key, dyn: dyn, cancel: cancel,
		stores:  map[schema.GroupVersionResource]cache.SharedIndexInformer{},
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[ref]()),
		applied: map[ref]applied{}, ignored: map[ref]bool{}, health: map[string]State{}, syncErrs: map[ref]error{},
	}
	ck.changed = func() {
		if k.Changed != nil {
			k.Changed(key)
		}
	}
	// Every kind addons may use is watched, not only the declared ones, so
	// objects of a kind dropped from the declaration are still found.
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.LabelSelector = addons.LabelAddon
	})
	for kind, gvr := range addons.Resources {
		inf := factory.ForResource(gvr).Informer()
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { ck.enqueue(kind, gvr, obj) },
			UpdateFunc: func(_, obj any) { ck.enqueue(kind, gvr, obj) },
			DeleteFunc: func(obj any) { ck.enqueue(kind, gvr, obj) },
		})
		ck.stores[gvr] = inf
		ck.synced = append(ck.synced, inf.HasSynced)
	}
	factory.Start(ctx.Done())
	go ck.work(ctx)
	go func() {
		<-ctx.Done()
		factory.Shutdown()
	}()
	k.clusters[key] = ck
	return ck
}

func (ck *clusterKeeper) stop() {
	ck.cancel()
	ck.queue.ShutDown()
}

func (ck *clusterKeeper) enqueue(kind string, gvr schema.GroupVersionResource, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	ck.queue.Add(ref{gvr: gvr, kind: kind, namespace: o.GetNamespace(), name: o.GetName()})
}

// work syncs the objects the watches report, one at a time.
func (ck *clusterKeeper) work(ctx context.Context) {
	for {
		r, shutdown := ck.queue.Get()
		if shutdown {
			return
		}
		if err := ck.sync(ctx, r); err != nil && ctx.Err() == nil {
			ck.queue.AddRateLimited(r)
		} else {
			ck.queue.Forget(r)
		}
		ck.queue.Done(r)
	}
}

// refs is every object to look at: the declared ones and the live ones
// that carry the addon label.
func (ck *clusterKeeper) refs() []ref {
	ck.mu.Lock()
	seen := map[ref]bool{}
	for r := range ck.desired {
		seen[r] = true
	}
	ck.mu.Unlock()
	for kind, gvr := range addons.Resources {
		for _, obj := range ck.stores[gvr].GetStore().List() {
			if o, ok := obj.(metav1.Object); ok {
				seen[ref{gvr: gvr, kind: kind, namespace: o.GetNamespace(), name: o.GetName()}] = true
			}
		}
	}
	out := make([]ref, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	// Namespaced objects a workload needs (ServiceAccounts, ConfigMaps)
	// before the workloads, so a first apply does not start pods that
	// wait for them.
	sort.Slice(out, func(i, j int) bool { return order(out[i]) < order(out[j]) })
	return out
}

func order(r ref) string {
	rank := map[string]string{"Deployment": "9", "DaemonSet": "9"}[r.kind]
	if rank == "" {
		rank = "0"
	}
	return rank + r.String()
}

func (ck *clusterKeeper) live(r ref) (*unstructured.Unstructured, bool) {
	inf := ck.stores[r.gvr]
	if inf == nil {
		return nil, false
	}
	key := r.name
	if r.namespace != "" {
		key = r.namespace + "/" + r.name
	}
	obj, ok, err := inf.GetStore().GetByKey(key)
	if err != nil || !ok {
		return nil, false
	}
	u, ok := obj.(*unstructured.Unstructured)
	return u, ok
}

// sync brings one object to its declared state (or removes it).
func (ck *clusterKeeper) sync(ctx context.Context, r ref) error {
	ck.mu.Lock()
	defer ck.mu.Unlock()
	err := ck.syncLocked(ctx, r)
	if err != nil {
		ck.syncErrs[r] = err
	} else {
		delete(ck.syncErrs, r)
	}
	if d, ok := ck.desired[r]; ok {
		ck.updateHealthLocked(d.addon)
	}
	return err
}

func (ck *clusterKeeper) syncLocked(ctx context.Context, r ref) error {
	want, declaredNow := ck.desired[r]
	live, exists := ck.live(r)
	if exists && live.GetAnnotations()[addons.AnnotationIgnore] == "true" {
		if !ck.ignored[r] {
			ck.ignored[r] = true
			ck.event(corev1.EventTypeNormal, "AddonObjectIgnored", ActionIgnore, fmt.Sprintf("%s is annotated %s=true: Lotse leaves it alone and does not repair it", r, addons.AnnotationIgnore))
		}
		return nil
	}
	if ck.ignored[r] {
		delete(ck.ignored, r)
		delete(ck.applied, r) // not known to be as declared: apply once
	}
	if !declaredNow {
		if !exists || ck.desired == nil {
			return nil
		}
		err := ck.resource(r).Delete(ctx, r.name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s: %w", r, err)
		}
		delete(ck.applied, r)
		ck.event(corev1.EventTypeNormal, "AddonObjectRemoved", ActionRemove, fmt.Sprintf("deleted %s: no longer part of the managed addons", r))
		return nil
	}
	prev, known := ck.applied[r]
	if known && (!exists || lotseFields(live) != prev.fields) {
		// A repair, by the cache: it may only lag behind this process's
		// own last apply (the watch event not there yet). Ask the API
		// before repairing, so a repair and its event are real.
		fresh, err := ck.resource(r).Get(ctx, r.name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			live, exists = nil, false
		case err != nil:
			return fmt.Errorf("get %s: %w", r, err)
		default:
			live, exists = fresh, true
		}
	}
	var repair, action string
	switch {
	case !exists && known:
		action = ActionRecreate
		repair = "recreated " + r.String() + ", which was deleted"
	case !exists:
		// first creation
	case !known:
		// Not applied by this process yet (Lotse restarted): apply once,
		// which changes nothing if the object is as declared.
	case prev.hash != want.hash && lotseFields(live) == prev.fields:
		// the declaration changed (and nobody else touched the object)
	case lotseFields(live) != prev.fields:
		// Someone changed Lotse's fields (perhaps while the declaration
		// changed too): the apply below is a repair, and says so.
		action = ActionRevert
		repair = fmt.Sprintf("reverted %s, whose fields owned by Lotse were changed by %s", r, editor(live, prev.fields))
	default:
		return nil // as declared
	}
	force := true
	out, err := ck.resource(r).Patch(ctx, r.name, types.ApplyPatchType, want.json, metav1.PatchOptions{FieldManager: addons.FieldManager, Force: &force})
	if err != nil {
		return fmt.Errorf("apply %s: %w", r, err)
	}
	ck.applied[r] = applied{hash: want.hash, fields: lotseFields(out)}
	if repair != "" {
		ck.event(corev1.EventTypeNormal, "AddonRepaired", action, repair)
	}
	return nil
}

func (ck *clusterKeeper) resource(r ref) dynamic.ResourceInterface {
	ri := ck.dyn.Resource(r.gvr)
	if r.namespace != "" {
		return ri.Namespace(r.namespace)
	}
	return ri
}

func (ck *clusterKeeper) event(eventType, reason, action, msg string) {
	if ck.events != nil {
		ck.events(eventType, reason, action, msg)
	}
}

// updateHealthLocked recomputes an addon's state and reports a change.
func (ck *clusterKeeper) updateHealthLocked(addon string) {
	s := ck.stateLocked(addon)
	old, had := ck.health[addon]
	ck.health[addon] = s
	if had && (old.Healthy != s.Healthy || old.Message != s.Message || len(old.Ignored) != len(s.Ignored)) {
		go ck.changed()
	}
}

func (ck *clusterKeeper) stateLocked(addon string) State {
	s := State{Name: addon, Healthy: true}
	var msgs []string
	var refs []ref
	for r, d := range ck.desired {
		if d.addon == addon {
			refs = append(refs, r)
		}
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].String() < refs[j].String() })
	for _, r := range refs {
		if ck.ignored[r] {
			s.Ignored = append(s.Ignored, r.String())
		}
		if err := ck.syncErrs[r]; err != nil {
			s.Healthy = false
			msgs = append(msgs, err.Error())
			continue
		}
		live, ok := ck.live(r)
		if !ok {
			s.Healthy = false
			msgs = append(msgs, r.String()+" missing")
			continue
		}
		ok, msg, err := addons.WorkloadHealth(live)
		if err != nil {
			ok, msg = false, err.Error()
		}
		s.Healthy = s.Healthy && ok
		if msg != "" {
			msgs = append(msgs, msg)
		}
	}
	s.Message = strings.Join(msgs, "; ")
	return s
}

func (ck *clusterKeeper) states() []State {
	ck.mu.Lock()
	defer ck.mu.Unlock()
	out := make([]State, 0, len(ck.addons))
	for _, a := range ck.addons {
		s := ck.stateLocked(a)
		ck.health[a] = s
		out = append(out, s)
	}
	return out
}

func refOf(o *unstructured.Unstructured) (ref, error) {
	gvr, ok := addons.Resources[o.GetKind()]
	if !ok {
		return ref{}, fmt.Errorf("addon object %s %s: kind not known to the keeper", o.GetKind(), o.GetName())
	}
	return ref{gvr: gvr, kind: o.GetKind(), namespace: o.GetNamespace(), name: o.GetName()}, nil
}

// lotseFields is the field set Lotse's apply owns in an object.
func lotseFields(o *unstructured.Unstructured) string {
	for _, e := range o.GetManagedFields() {
		if e.Manager == addons.FieldManager && e.Operation == metav1.ManagedFieldsOperationApply && e.Subresource == "" && e.FieldsV1 != nil {
			return e.FieldsV1.GetRawString()
		}
	}
	return ""
}

// editor names who changed fields Lotse had applied: the other managers
// that now own some of the fields Lotse's entry lost (Update operations
// move a changed field to their manager). Not every entry has a time (the
// scale subresource's has none), so the fields decide, not the clock.
func editor(o *unstructured.Unstructured, before string) string {
	lost, err := fieldSet(before)
	if err != nil {
		return "someone else"
	}
	if now, err := fieldSet(lotseFields(o)); err == nil {
		lost = lost.Difference(now)
	}
	var who []string
	for _, e := range o.GetManagedFields() {
		if e.Manager == addons.FieldManager || e.FieldsV1 == nil {
			continue
		}
		theirs, err := fieldSet(e.FieldsV1.GetRawString())
		if err == nil && !theirs.Intersection(lost).Empty() && !slices.Contains(who, e.Manager) {
			who = append(who, e.Manager)
		}
	}
	if len(who) == 0 {
		return "someone else" // deleted fields leave no owner behind
	}
	sort.Strings(who)
	return strings.Join(who, ", ")
}

func fieldSet(raw string) (*fieldpath.Set, error) {
	s := &fieldpath.Set{}
	if raw == "" {
		return s, nil
	}
	return s, s.FromJSON(strings.NewReader(raw))
}
