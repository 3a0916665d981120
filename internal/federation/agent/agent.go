// Package agent is a pull-mode member's side of a fleet: it runs where the
// member's API is (in the member, as a Deployment), reaches out to the
// fleet's API with an identity of its own, applies the Works the fleet
// puts in the member's execution namespace, reports each object's status
// back into its Work and renews a Lease there that tells the fleet the
// member is present. The fleet never opens a connection to the member, so
// a member behind no inbound route can still be one (Karmada's
// karmada-agent does the same).
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
	"github.com/lotse/lotse/internal/federation/placement"
	"github.com/lotse/lotse/internal/federation/propagation"
)

// Defaults of an Agent.
const (
	// DefaultLeaseDuration is how long the fleet counts the member as
	// present after the agent's last renewal; the agent renews at a
	// quarter of it.
	DefaultLeaseDuration = 40 * time.Second
	// resync is how often a Work's status is refreshed when nothing
	// else asks (a custom kind's status is not watched).
	resync = 30 * time.Second
)

// FleetRules are what an agent may do in its member's execution
// namespace of the fleet, and all it needs there: read its Works, report
// their status, keep its Lease.
func FleetRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{workv1.GroupVersion.Group}, Resources: []string{"works"}, Verbs: []string{"get", "list", "watch", "update", "patch"}},
		{APIGroups: []string{workv1.GroupVersion.Group}, Resources: []string{"works/status"}, Verbs: []string{"get", "update", "patch"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
	}
}

// AnnotationWork on a member object names the Work (namespace/name) that
// applied it, so that a change of its status refreshes that Work.
const AnnotationWork = "work.lotse.dev/work"

// Agent applies one member's Works.
type Agent struct {
	// Member is the member's name in the fleet.
	Member string
	// Fleet reaches the fleet's API with the agent's identity; Local the
	// member's own API.
	Fleet, Local *rest.Config
	// LeaseDuration: see DefaultLeaseDuration.
	LeaseDuration time.Duration
	// RenewAt, when set, is when the identity in Fleet is to be renewed:
	// Run returns ErrRenew then (see RenewAt and FleetIdentity).
	RenewAt time.Time
}

// clientLimit replaces client-go's default client-side limit (5 requests
// a second, burst 10) that every config without its own would get: each
// Work costs the agent a few requests (the copy's apply, the Work's
// status), so under that limit a steady stream of template changes
// waited 200 ms per request. The API servers apply their own fairness.
func clientLimit(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	if c.RateLimiter == nil && c.QPS == 0 {
		c.QPS, c.Burst = 100, 200
	}
	return c
}

// ErrRenew: the agent stopped to renew its identity in the fleet.
var ErrRenew = errors.New("the agent's certificate for the fleet is due for renewal")

// Run applies Works and renews the Lease until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if a.Member == "" || a.Fleet == nil || a.Local == nil {
		return errors.New("agent: member, fleet and local API are required")
	}
	fleetCfg, localCfg := clientLimit(a.Fleet), clientLimit(a.Local)
	scheme := runtime.NewScheme()
	if err := workv1.AddToScheme(scheme); err != nil {
		return err
	}
	if err := coordinationv1.AddToScheme(scheme); err != nil {
		return err
	}
	ns := workv1.ExecutionNamespace(a.Member)
	mgr, err := ctrl.NewManager(fleetCfg, manager.Options{
		Scheme:  scheme,
		Metrics: server.Options{BindAddress: "0"},
		// The agent's identity may read its execution namespace only.
		Cache: cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
	})
	if err != nil {
		return fmt.Errorf("the fleet's API: %w", err)
	}
	local, err := newMemberClient(localCfg)
	if err != nil {
		return fmt.Errorf("the member's API: %w", err)
	}
	r := &workReconciler{fleet: mgr.GetClient(), member: local}
	changes := make(chan event.TypedGenericEvent[*workv1.Work], 64)
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return local.watchCopies(ctx, changes) })); err != nil {
		return err
	}
	lease := a.LeaseDuration
	if lease <= 0 {
		lease = DefaultLeaseDuration
	}
	localCS, err := kubernetes.NewForConfig(localCfg)
	if err != nil {
		return err
	}
	// The Lease is read and written directly: the agent's Role lets it
	// get and update its Lease, not list and watch Leases for a cache.
	leaseClient, err := client.New(fleetCfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return renewLease(ctx, leaseClient, localCS, ns, a.Member, lease)
	})); err != nil {
		return err
	}
	if !a.RenewAt.IsZero() {
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Until(a.RenewAt)):
				return ErrRenew
			}
		})); err != nil {
			return err
		}
	}
	err = ctrl.NewControllerManagedBy(mgr).Named("fleet-agent").
		// Run again after a renewal, in the same process: the same name.
		WithOptions(controller.Options{SkipNameValidation: ptr.To(true)}).
		For(&workv1.Work{}).
		WatchesRawSource(source.Channel(changes, &handler.TypedEnqueueRequestForObject[*workv1.Work]{})).
		Complete(r)
	if err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// renewLease keeps the member's Lease in its execution namespace fresh,
// with the member's version and nodes on it.
func renewLease(ctx context.Context, c client.Client, local kubernetes.Interface, namespace, member string, duration time.Duration) error {
	tick := time.NewTicker(duration / 4)
	defer tick.Stop()
	for {
		if err := renewOnce(ctx, c, memberFacts(ctx, local), namespace, member, duration); err != nil && ctx.Err() == nil {
			log.FromContext(ctx).Error(err, "renewing the member's lease in the fleet")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// memberFacts are the annotations the Lease carries; what cannot be
// read now is left out.
func memberFacts(ctx context.Context, local kubernetes.Interface) map[string]string {
	facts := map[string]string{}
	if v, err := local.Discovery().ServerVersion(); err == nil {
		facts[workv1.AnnotationKubernetesVersion] = v.GitVersion
	}
	room, err := placement.Measure(ctx, local, local)
	if err != nil {
		return facts
	}
	facts[workv1.AnnotationNodes] = fmt.Sprintf("%d/%d", room.ReadyNodes, room.Nodes)
	if room.Zone != "" {
		facts[workv1.AnnotationZone] = room.Zone
	}
	if room.Allocated != nil {
		if data, err := json.Marshal(map[string]corev1.ResourceList{"allocatable": room.Allocatable, "allocated": room.Allocated}); err == nil {
			facts[workv1.AnnotationRoom] = string(data)
		}
	}
	return facts
}

func renewOnce(ctx context.Context, c client.Client, facts map[string]string, namespace, member string, duration time.Duration) error {
	now := metav1.NewMicroTime(time.Now())
	l := &coordinationv1.Lease{}
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: workv1.AgentLeaseName}, l)
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: workv1.AgentLeaseName, Annotations: facts},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(member), LeaseDurationSeconds: ptr.To(int32(duration / time.Second)),
				AcquireTime: &now, RenewTime: &now}}
		return c.Create(ctx, l)
	} else if err != nil {
		return err
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	for k, v := range facts {
		l.Annotations[k] = v
	}
	l.Spec.HolderIdentity = ptr.To(member)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(duration / time.Second))
	l.Spec.RenewTime = &now
	return c.Update(ctx, l)
}

// workReconciler applies one Work in the member and reports back.
type workReconciler struct {
	fleet  client.Client
	member *memberClient
}

func (r *workReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	w := &workv1.Work{}
	if err := r.fleet.Get(ctx, req.NamespacedName, w); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !w.DeletionTimestamp.IsZero() {
		if !controllerutil.ContainsFinalizer(w, workv1.WorkFinalizer) {
			return reconcile.Result{}, nil
		}
		if err := r.member.remove(ctx, w); err != nil {
			return reconcile.Result{}, fmt.Errorf("removing what work %s applied: %w", req.Name, err)
		}
		controllerutil.RemoveFinalizer(w, workv1.WorkFinalizer)
		return reconcile.Result{}, r.fleet.Update(ctx, w)
	}
	if controllerutil.AddFinalizer(w, workv1.WorkFinalizer) {
		if err := r.fleet.Update(ctx, w); err != nil {
			return reconcile.Result{}, err
		}
	}
	statuses, addrErr, applyErr := r.member.apply(ctx, w)
	st := w.Status.DeepCopy()
	st.ManifestStatuses = statuses
	cond := metav1.Condition{Type: workv1.ConditionApplied, Status: metav1.ConditionTrue, Reason: "Applied",
		Message: "every manifest is applied in the member", ObservedGeneration: w.Generation}
	if applyErr != nil {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "ApplyFailed", applyErr.Error()
	}
	apimeta.SetStatusCondition(&st.Conditions, cond)
	if !equalStatus(w.Status, *st) {
		w.Status = *st
		if err := r.fleet.Status().Update(ctx, w); err != nil {
			return reconcile.Result{}, err
		}
	}
	if applyErr != nil && !errors.Is(applyErr, errConflict) {
		// Reported; tried again with growing pauses (a namespace on its
		// way, a CRD not established yet).
		return reconcile.Result{}, applyErr
	}
	if addrErr != nil {
		// The last addresses stay reported; read again soon.
		return reconcile.Result{}, addrErr
	}
	return reconcile.Result{RequeueAfter: resync}, nil
}

func equalStatus(a, b workv1.WorkStatus) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// errConflict marks a refusal that retrying cannot change: the policy
// must say Overwrite (a new Work generation).
var errConflict = errors.New("conflict")

// memberClient applies manifests in the member.
type memberClient struct {
	cfg    *rest.Config
	dyn    dynamic.Interface
	mapper apimeta.RESTMapper
}

func newMemberClient(cfg *rest.Config) (*memberClient, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, hc)
	if err != nil {
		return nil, err
	}
	return &memberClient{cfg: cfg, dyn: dyn, mapper: mapper}, nil
}

// manifest decodes a Work's manifest i.
func manifest(w *workv1.Work, i int) (*unstructured.Unstructured, error) {
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(w.Spec.Workload.Manifests[i].Raw); err != nil {
		return nil, fmt.Errorf("manifest %d: %w", i, err)
	}
	return obj, nil
}

func (m *memberClient) resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, schema.GroupVersionResource, error) {
	gvk := obj.GroupVersionKind()
	mapping, err := m.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, schema.GroupVersionResource{}, fmt.Errorf("the member does not serve %s: %w", gvk, err)
	}
	if mapping.Scope.Name() == apimeta.RESTScopeNameNamespace {
		return m.dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace()), mapping.Resource, nil
	}
	return m.dyn.Resource(mapping.Resource), mapping.Resource, nil
}

// apply applies every manifest of a Work and returns their status. An
// object of the member's own (without this fleet's marks) is left alone
// unless the Work says Overwrite. A Service's addresses that cannot be
// read now are reported as they were last (addrErr says why), so that a
// passing error does not take the member out of the fleet's DNS.
func (m *memberClient) apply(ctx context.Context, w *workv1.Work) (out []workv1.ManifestStatus, addrErr, err error) {
	var errs []error
	for i := range w.Spec.Workload.Manifests {
		obj, err := manifest(w, i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		gvk := obj.GroupVersionKind()
		st := workv1.ManifestStatus{Identifier: workv1.ResourceIdentifier{Ordinal: i, Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind,
			Namespace: obj.GetNamespace(), Name: obj.GetName()}, Health: workv1.HealthUnknown}
		applied, err := m.applyOne(ctx, w, obj)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err))
		} else {
			st.Generation, st.ResourceVersion = applied.GetGeneration(), applied.GetResourceVersion()
			st.Health = propagation.Health(kindID(gvk), applied)
			if kindID(gvk) == "Service" {
				if st.Addresses, err = m.serviceAddresses(ctx, applied); err != nil {
					st.Addresses = reportedAddresses(w, i)
					addrErr = fmt.Errorf("the addresses of Service %s/%s: %w", obj.GetNamespace(), obj.GetName(), err)
				}
			}
			if s, ok := applied.Object["status"]; ok {
				if raw, err := json.Marshal(s); err == nil {
					st.Status = &runtime.RawExtension{Raw: raw}
				}
			}
		}
		out = append(out, st)
	}
	return out, addrErr, errors.Join(errs...)
}

// reportedAddresses are the addresses last reported for manifest i.
func reportedAddresses(w *workv1.Work, i int) []string {
	for _, st := range w.Status.ManifestStatuses {
		if st.Identifier.Ordinal == i {
			return st.Addresses
		}
	}
	return nil
}

// serviceAddresses reads what the fleet's DNS answers for the member's
// copy of a Service (propagation.ServingAddresses) from the member. An
// agent that may not read EndpointSlices counts the Service as served,
// as the engine does for a push member with such credentials.
func (m *memberClient) serviceAddresses(ctx context.Context, svc *unstructured.Unstructured) ([]string, error) {
	sliceList, err := m.dyn.Resource(endpointSlicesGVR).Namespace(svc.GetNamespace()).List(ctx,
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc.GetName()})
	unreadable := apierrors.IsForbidden(err)
	if err != nil && !unreadable {
		return nil, fmt.Errorf("listing its EndpointSlices: %w", err)
	}
	var nodes []*unstructured.Unstructured
	if propagation.NeedsNodes(svc) {
		list, err := m.dyn.Resource(nodesGVR).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing the nodes: %w", err)
		}
		nodes = items(list)
	}
	var out []string
	for _, ip := range propagation.ServingAddresses(svc, items(sliceList), unreadable, nodes) {
		out = append(out, ip.String())
	}
	return out, nil
}

var (
	endpointSlicesGVR = discoveryv1.SchemeGroupVersion.WithResource("endpointslices")
	nodesGVR          = corev1.SchemeGroupVersion.WithResource("nodes")
)

func items(list *unstructured.UnstructuredList) []*unstructured.Unstructured {
	if list == nil {
		return nil
	}
	out := make([]*unstructured.Unstructured, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out
}

// kindID names a kind as the engine does: Kind for the built-in kinds it
// knows, Kind.group for others.
func kindID(gvk schema.GroupVersionKind) string {
	for _, k := range propagation.Kinds {
		if k.Kind == gvk.Kind && k.GVR.Group == gvk.Group {
			return k.Kind
		}
	}
	return gvk.Kind + "." + gvk.Group
}

func (m *memberClient) applyOne(ctx context.Context, w *workv1.Work, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	res, _, err := m.resource(obj)
	if err != nil {
		return nil, err
	}
	fleetKey := obj.GetAnnotations()[propagation.AnnotationFleet]
	cur, err := res.Get(ctx, obj.GetName(), metav1.GetOptions{})
	switch {
	case err == nil && !propagation.MadeBy(cur, fleetKey) && w.Spec.ConflictResolution != "Overwrite":
		return nil, fmt.Errorf("%w: %w", errConflict, propagation.ConflictError(obj.GetKind(), obj.GetName()))
	case err != nil && !apierrors.IsNotFound(err):
		return nil, err
	}
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationWork] = w.Namespace + "/" + w.Name
	obj.SetAnnotations(ann)
	opts := metav1.ApplyOptions{FieldManager: propagation.FieldManager, Force: true}
	out, err := res.Apply(ctx, obj.GetName(), obj, opts)
	if err != nil && obj.GetNamespace() != "" && apierrors.IsNotFound(err) {
		// The namespace's own Work has not come yet: a bare one with the
		// fleet's marks, which that Work then takes over.
		ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{
			"name":        obj.GetNamespace(),
			"labels":      map[string]any{lotsev1.LabelFleet: obj.GetLabels()[lotsev1.LabelFleet]},
			"annotations": map[string]any{propagation.AnnotationFleet: fleetKey, propagation.AnnotationTemplate: "/" + obj.GetNamespace()},
		}}}
		if _, nerr := m.dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Apply(ctx, ns.GetName(), ns, opts); nerr != nil {
			return nil, nerr
		}
		out, err = res.Apply(ctx, obj.GetName(), obj, opts)
	}
	return out, err
}

// remove deletes what a Work applied, if this fleet made it.
func (m *memberClient) remove(ctx context.Context, w *workv1.Work) error {
	for i := len(w.Spec.Workload.Manifests) - 1; i >= 0; i-- {
		obj, err := manifest(w, i)
		if err != nil {
			continue // never applied
		}
		res, gvr, err := m.resource(obj)
		if err != nil {
			if apimeta.IsNoMatchError(err) {
				continue // the kind is gone, and its objects with it
			}
			return err
		}
		cur, err := res.Get(ctx, obj.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			return err
		}
		fleetKey := obj.GetAnnotations()[propagation.AnnotationFleet]
		if !propagation.MadeBy(cur, fleetKey) {
			continue
		}
		if err := propagation.DeleteCopy(ctx, m.cfg, m.dyn, gvr, fleetKey, obj.GetLabels()[lotsev1.LabelFleet], cur); err != nil {
			return err
		}
	}
	return nil
}

// watchCopies turns every change of a fleet copy of a built-in kind in
// the member into a look at the Work that applied it, so that its status
// follows the member's (a Deployment's pods becoming ready).
func (m *memberClient) watchCopies(ctx context.Context, out chan<- event.TypedGenericEvent[*workv1.Work]) error {
	// Only the fleet's copies: a member may hold many objects of its own.
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(m.dyn, 10*time.Minute, metav1.NamespaceAll,
		func(o *metav1.ListOptions) { o.LabelSelector = lotsev1.LabelFleet })
	notify := func(obj any) {
		if d, ok := obj.(interface{ GetAnnotations() map[string]string }); ok {
			ns, name, found := cutKey(d.GetAnnotations()[AnnotationWork])
			if !found {
				return
			}
			select {
			case out <- event.TypedGenericEvent[*workv1.Work]{Object: &workv1.Work{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}}:
			case <-ctx.Done():
			}
		}
	}
	for _, k := range propagation.Kinds {
		_, err := factory.ForResource(k.GVR).Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: notify, UpdateFunc: func(_, obj any) { notify(obj) },
			DeleteFunc: func(obj any) {
				if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				notify(obj)
			}})
		if err != nil {
			return err
		}
	}
	// A Service's reported addresses follow its endpoints and, for node
	// ports, the nodes: their changes are a look at the Service's Work.
	services := factory.ForResource(servicesGVR).Informer().GetStore()
	serviceOf := func(obj any) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if slice, ok := obj.(*unstructured.Unstructured); ok {
			if svc, found, _ := services.GetByKey(slice.GetNamespace() + "/" + slice.GetLabels()[discoveryv1.LabelServiceName]); found {
				notify(svc)
			}
		}
	}
	nodePortServices := func() {
		for _, obj := range services.List() {
			if svc, ok := obj.(*unstructured.Unstructured); ok && propagation.NeedsNodes(svc) {
				notify(svc)
			}
		}
	}
	others := dynamicinformer.NewDynamicSharedInformerFactory(m.dyn, 10*time.Minute)
	if _, err := others.ForResource(endpointSlicesGVR).Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: serviceOf,
		// Endpoints come and go with pods: only whether one is ready
		// changes the answer.
		UpdateFunc: func(old, cur any) {
			if sliceReady(old) != sliceReady(cur) {
				serviceOf(cur)
			}
		},
		DeleteFunc: serviceOf}); err != nil {
		return err
	}
	if _, err := others.ForResource(nodesGVR).Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { nodePortServices() },
		UpdateFunc: func(old, cur any) {
			if nodeAnswer(old) != nodeAnswer(cur) {
				nodePortServices()
			}
		},
		DeleteFunc: func(any) { nodePortServices() }}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	others.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
	others.Shutdown()
	return nil
}

// sliceReady reports whether an EndpointSlice has a ready endpoint.
func sliceReady(obj any) bool {
	slice, ok := obj.(*unstructured.Unstructured)
	return ok && propagation.HasReadyEndpoint(slice)
}

// nodeAnswer is what of a node the fleet's DNS answers with: its
// addresses, while it is Ready.
func nodeAnswer(obj any) string {
	node, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return ""
	}
	return fmt.Sprint(propagation.ReadyNodeAddresses(node))
}

var servicesGVR = corev1.SchemeGroupVersion.WithResource("services")

// cutKey splits "namespace/name".
func cutKey(s string) (string, string, bool) {
	ns, name, found := strings.Cut(s, "/")
	return ns, name, found && ns != "" && name != ""
}
