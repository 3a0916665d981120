// Package fleet reconciles Fleets and FleetMembers on the management API:
// a fleet's control plane (a Cluster with purpose fleet, carrying the
// policy and binding CRDs), its propagation engine, and its members'
// health, region and credentials.
package fleet

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	untrustedkubeconfig "github.com/lotse/lotse/internal/kubeconfig"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/config/crd"
	fleetdns "github.com/lotse/lotse/internal/federation/dns"
	"github.com/lotse/lotse/internal/federation/propagation"
)

// ControlPlaneName is the Cluster that hosts a fleet's API.
func ControlPlaneName(fleet string) string { return fleet + "-fleet" }

// Reconciler reconciles Fleets and runs one propagation engine per fleet.
type Reconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// DNSServer is the address of the manager's DNS server, which serves
	// the fleets' zones (Zones); empty when there is none.
	DNSServer string

	mu      sync.Mutex
	base    context.Context           // the manager's: engines stop with it
	engines map[string]*runningEngine // fleet key -> engine
}

type runningEngine struct {
	engine  *propagation.Engine
	version [32]byte
	cancel  context.CancelFunc
	done    chan struct{}
	// zone and ttl of the fleet's DNS.
	zone string
	ttl  uint32
}

// ZoneOf is a fleet's DNS zone, fully qualified.
func ZoneOf(f *lotsev1.Fleet) string {
	zone := f.Spec.DNS.Zone
	if zone == "" {
		zone = f.Name + "." + f.Namespace + ".fleet.lotse"
	}
	return strings.TrimSuffix(strings.ToLower(zone), ".") + "."
}

// Zones are the running fleets' DNS zones, for the DNS server.
func (r *Reconciler) Zones() []fleetdns.Zone {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.engines))
	for k := range r.engines {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]fleetdns.Zone, 0, len(r.engines))
	for _, k := range keys {
		run := r.engines[k]
		e := run.engine
		out = append(out, fleetdns.Zone{Name: run.zone, TTL: run.ttl, Lookup: func(namespace, service, region string) ([]net.IP, bool, error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return e.ServiceAddresses(ctx, namespace, service, region)
		}})
	}
	return out
}

// SetupWithManager registers the Fleet and FleetMember controllers; the
// fleets' engines run while the manager does.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		r.mu.Lock()
		r.base = ctx
		r.mu.Unlock()
		<-ctx.Done()
		r.mu.Lock()
		keys := make([]string, 0, len(r.engines))
		for k := range r.engines {
			keys = append(keys, k)
		}
		r.mu.Unlock()
		for _, k := range keys {
			r.stopEngine(k)
		}
		return nil
	})); err != nil {
		return err
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("fleet").For(&lotsev1.Fleet{}).
		Owns(&lotsev1.Cluster{}).
		Watches(&lotsev1.FleetMember{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			m := o.(*lotsev1.FleetMember)
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.Fleet}}}
		})).
		Complete(reconcile.Func(r.reconcileFleet)); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).Named("fleetmember").For(&lotsev1.FleetMember{}).
		Complete(reconcile.Func(r.reconcileMember))
}

func (r *Reconciler) reconcileFleet(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	f := &lotsev1.Fleet{}
	if err := r.Client.Get(ctx, req.NamespacedName, f); err != nil {
		if apierrors.IsNotFound(err) {
			r.stopEngine(req.String())
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !f.DeletionTimestamp.IsZero() {
		return r.deleteFleet(ctx, f)
	}
	if controllerutil.AddFinalizer(f, lotsev1.FleetFinalizer) {
		if err := r.Client.Update(ctx, f); err != nil {
			return ctrl.Result{}, err
		}
	}
	status := f.Status.DeepCopy()
	status.ObservedGeneration = f.Generation
	status.ControlPlane = ControlPlaneName(f.Name)

	cl := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: f.Namespace, Name: ControlPlaneName(f.Name)}}
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(cl), cl)
	switch {
	case apierrors.IsNotFound(err):
		cl.Labels = map[string]string{lotsev1.LabelFleet: f.Name}
		cl.Spec.Purpose = lotsev1.PurposeFleet
		cl.Spec.Kubernetes = f.Spec.Kubernetes
		cl.Spec.ControlPlane = f.Spec.ControlPlane
		if err := controllerutil.SetControllerReference(f, cl, r.Client.Scheme()); err != nil {
			return ctrl.Result{}, err
		}
		if err := r.Client.Create(ctx, cl); err != nil {
			return ctrl.Result{}, err
		}
		r.event(f, corev1.EventTypeNormal, "ControlPlaneCreated", "created Cluster %s for the fleet's API", cl.Name)
	case err != nil:
		return ctrl.Result{}, err
	case !metav1.IsControlledBy(cl, f):
		return r.writeStatus(ctx, f, status, metav1.ConditionFalse, "NameTaken",
			fmt.Sprintf("Cluster %s exists and does not belong to this fleet; rename that cluster or the fleet", cl.Name))
	default:
		// The fleet's version and HA follow the Fleet when the Fleet
		// changes; maintenance may move the version on by itself between.
		if f.Status.ObservedGeneration != f.Generation && (cl.Spec.Kubernetes.Version != f.Spec.Kubernetes.Version && f.Spec.Kubernetes.Version != "" ||
			cl.Spec.ControlPlane.HighAvailability != f.Spec.ControlPlane.HighAvailability) {
			cl.Spec.Kubernetes.Version = f.Spec.Kubernetes.Version
			cl.Spec.ControlPlane.HighAvailability = f.Spec.ControlPlane.HighAvailability
			if err := r.Client.Update(ctx, cl); err != nil {
				return r.writeStatus(ctx, f, status, metav1.ConditionFalse, "ControlPlaneChangeRefused", err.Error())
			}
		}
	}
	status.Endpoint = cl.Status.Endpoint
	status.KubeconfigSecret = cl.Status.KubeconfigSecret
	members, ready, err := r.countMembers(ctx, f)
	if err != nil {
		return ctrl.Result{}, err
	}
	status.Members, status.ReadyMembers = members, ready
	if !meta.IsStatusConditionTrue(cl.Status.Conditions, lotsev1.ConditionAPIServerAvailable) || cl.Status.KubeconfigSecret == "" {
		_, err := r.writeStatus(ctx, f, status, metav1.ConditionFalse, "ControlPlaneStarting",
			fmt.Sprintf("waiting for Cluster %s (%s)", cl.Name, cl.Status.Phase))
		return ctrl.Result{RequeueAfter: 2 * time.Second}, err
	}
	kubeconfig, err := r.clusterKubeconfig(ctx, f.Namespace, cl.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	status.DNS = &lotsev1.FleetDNSStatus{Zone: ZoneOf(f), Server: r.DNSServer}
	if err := r.ensureEngine(ctx, f, kubeconfig); err != nil {
		_, werr := r.writeStatus(ctx, f, status, metav1.ConditionFalse, "PolicyAPIsMissing", err.Error())
		if werr != nil {
			return ctrl.Result{}, werr
		}
		return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
	}
	return r.writeStatus(ctx, f, status, metav1.ConditionTrue, "Ready", "the fleet's API answers and carries the policy APIs")
}

func (r *Reconciler) writeStatus(ctx context.Context, f *lotsev1.Fleet, status *lotsev1.FleetStatus, cond metav1.ConditionStatus, reason, msg string) (ctrl.Result, error) {
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: lotsev1.ConditionControlPlaneReady, Status: cond, Reason: reason,
		Message: msg, ObservedGeneration: f.Generation})
	status.Phase = lotsev1.FleetPending
	if cond == metav1.ConditionTrue {
		status.Phase = lotsev1.FleetReady
	}
	if equalStatus(&f.Status, status) {
		return ctrl.Result{}, nil
	}
	f.Status = *status
	return ctrl.Result{}, r.Client.Status().Update(ctx, f)
}

// equalStatus compares two statuses as the API stores them: through
// their serialised form, so times that differ only below a second (which
// the API drops) are equal and a status is not rewritten on every pass.
func equalStatus(a, b *lotsev1.FleetStatus) bool {
	ua, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(a)
	ub, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(b)
	return fmt.Sprint(ua) == fmt.Sprint(ub)
}

func (r *Reconciler) countMembers(ctx context.Context, f *lotsev1.Fleet) (int32, int32, error) {
	list := &lotsev1.FleetMemberList{}
	if err := r.Client.List(ctx, list, client.InNamespace(f.Namespace)); err != nil {
		return 0, 0, err
	}
	var n, ready int32
	for _, m := range list.Items {
		if m.Spec.Fleet != f.Name {
			continue
		}
		n++
		if meta.IsStatusConditionTrue(m.Status.Conditions, lotsev1.ConditionMemberReady) {
			ready++
		}
	}
	return n, ready, nil
}

// ensureEngine installs the policy APIs in the fleet and runs its engine
// (again, when the fleet's credentials changed).
func (r *Reconciler) ensureEngine(ctx context.Context, f *lotsev1.Fleet, kubeconfig []byte) error {
	key := client.ObjectKeyFromObject(f).String()
	sum := sha256.Sum256(kubeconfig)
	r.mu.Lock()
	cur, running := r.engines[key]
	base := r.base
	r.mu.Unlock()
	if base == nil {
		return fmt.Errorf("the manager is not running yet")
	}
	if running && cur.version == sum {
		select {
		case <-cur.done: // it stopped on an error: start it again
		default:
			r.mu.Lock()
			cur.zone, cur.ttl = ZoneOf(f), uint32(max(f.Spec.DNS.TTL, 1))
			r.mu.Unlock()
			return nil
		}
	}
	cfg, err := untrustedkubeconfig.ParseUntrusted(kubeconfig)
	if err != nil {
		return err
	}
	if err := installPolicyAPIs(ctx, cfg); err != nil {
		return err
	}
	r.stopEngine(key)
	subject := f.DeepCopy()
	e, err := propagation.New(key, f.Name, cfg,
		&memberSource{client: r.Client, namespace: f.Namespace, fleet: f.Name, kubeconfig: r.memberKubeconfig},
		func(obj *unstructured.Unstructured, warning bool, reason, message string) {
			t := corev1.EventTypeNormal
			if warning {
				t = corev1.EventTypeWarning
			}
			r.event(subject, t, reason, "%s %s/%s: %s", obj.GetKind(), obj.GetNamespace(), obj.GetName(), message)
		})
	if err != nil {
		return err
	}
	// The engine lives as long as the manager (not the reconcile).
	runCtx, cancel := context.WithCancel(base)
	run := &runningEngine{engine: e, version: sum, cancel: cancel, done: make(chan struct{}), zone: ZoneOf(f), ttl: uint32(max(f.Spec.DNS.TTL, 1))}
	logger := log.FromContext(ctx).WithValues("fleet", key)
	go func() {
		defer close(run.done)
		if err := e.Run(log.IntoContext(runCtx, logger)); err != nil {
			logger.Error(err, "fleet engine stopped")
		}
	}()
	r.mu.Lock()
	if r.engines == nil {
		r.engines = map[string]*runningEngine{}
	}
	r.engines[key] = run
	r.mu.Unlock()
	return nil
}

func (r *Reconciler) engine(key string) *propagation.Engine {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.engines[key]; ok {
		return e.engine
	}
	return nil
}

func (r *Reconciler) stopEngine(key string) {
	r.mu.Lock()
	e, ok := r.engines[key]
	delete(r.engines, key)
	r.mu.Unlock()
	if ok {
		e.cancel()
		<-e.done
	}
}

// installPolicyAPIs applies the policy and binding CRDs in the fleet.
func installPolicyAPIs(ctx context.Context, cfg *rest.Config) error {
	scheme := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	manifests, err := crd.FleetManifests()
	if err != nil {
		return err
	}
	ictx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return crd.Apply(ictx, c, manifests)
}

// deleteFleet removes what the fleet put into its members (each
// FleetMember leaves), then its control plane, then the finalizer.
func (r *Reconciler) deleteFleet(ctx context.Context, f *lotsev1.Fleet) (ctrl.Result, error) {
	list := &lotsev1.FleetMemberList{}
	if err := r.Client.List(ctx, list, client.InNamespace(f.Namespace)); err != nil {
		return ctrl.Result{}, err
	}
	waiting := 0
	for i := range list.Items {
		m := &list.Items[i]
		if m.Spec.Fleet != f.Name {
			continue
		}
		waiting++
		if m.DeletionTimestamp.IsZero() {
			if err := r.Client.Delete(ctx, m); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, err
			}
		}
	}
	if waiting > 0 {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	r.stopEngine(client.ObjectKeyFromObject(f).String())
	cl := &lotsev1.Cluster{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: ControlPlaneName(f.Name)}, cl)
	if err == nil && metav1.IsControlledBy(cl, f) {
		if cl.DeletionTimestamp.IsZero() {
			if err := r.Client.Delete(ctx, cl); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, err
			}
		}
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	}
	if controllerutil.RemoveFinalizer(f, lotsev1.FleetFinalizer) {
		return ctrl.Result{}, r.Client.Update(ctx, f)
	}
	return ctrl.Result{}, nil
}

func (r *Reconciler) secretKubeconfig(ctx context.Context, namespace, name string) ([]byte, error) {
	s := &corev1.Secret{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, s); err != nil {
		return nil, err
	}
	data := s.Data["kubeconfig"]
	if len(data) == 0 {
		return nil, fmt.Errorf("secret %s/%s has no key \"kubeconfig\"", namespace, name)
	}
	return data, nil
}

func (r *Reconciler) event(obj runtime.Object, eventType, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(obj, nil, eventType, reason, "Reconcile", format, args...)
	}
}
