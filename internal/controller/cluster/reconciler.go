// Package cluster reconciles Cluster objects: it turns a Cluster's spec into
// a hosted control plane through a graph of named tasks, writes the admin
// kubeconfig Secret, and reports progress and health in the status.
package cluster

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/source"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/backup"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/machine"
	"github.com/lotse/lotse/internal/maintenance"
	"github.com/lotse/lotse/internal/metrics"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/tasks"
	"github.com/lotse/lotse/internal/tenant"
)

// TaskKubeconfigSecret writes the admin kubeconfig Secret.
const TaskKubeconfigSecret = "kubeconfig-secret"

// KubeconfigSecretName is the name of a cluster's admin kubeconfig Secret.
func KubeconfigSecretName(cluster string) string { return cluster + "-kubeconfig" }

// refOf names a Cluster.
func refOf(c *lotsev1.Cluster) clusterref.Ref {
	return clusterref.Ref{Namespace: c.Namespace, Name: c.Name}
}

// Reconciler reconciles Clusters.
type Reconciler struct {
	Client client.Client
	// APIReader reads around the cache where a stale read would do harm
	// (choosing a free machine index).
	APIReader client.Reader
	Backend   controlplane.Backend
	// Provider makes the machines of worker pools and their network.
	Provider machine.Provider
	Releases *releases.Store
	Recorder events.EventRecorder
	// EndpointTask names the backend task after which the API answers.
	EndpointTask func(controlplane.Spec) string
	// SeedsOnly places every control plane on a seed, also those whose
	// spec names no seedSelector (a manager installed in a cluster).
	SeedsOnly bool
	// BuildLog receives the output of release builds started on demand.
	BuildLog io.Writer

	// Tenants caches clients of tenant clusters.
	Tenants tenant.Access
	// Addons keeps the managed components inside tenant clusters.
	Addons AddonKeeper
	// Cloud runs the clusters' cloud controller managers (nil: none).
	Cloud CloudControllers
	// CloudAPI, if set, gives clusters cloud controller manager processes
	// of their own (see withCloudController).
	CloudAPI CloudAPI
	// Destinations are where backups are kept and the key that seals
	// them (nil: restores are refused).
	Destinations *backup.Destinations
	// Responders answer on the API endpoints of hibernated clusters (nil:
	// the port is closed while a cluster sleeps).
	Responders Responders
	// DNSUpstreams are the resolvers CoreDNS forwards to; empty keeps DNS
	// inside the cluster (the default: local clusters send nothing out).
	DNSUpstreams []string

	// ProcessEvents carries supervisor notifications (a process of a
	// cluster started or died) so status follows within a second.
	ProcessEvents chan event.GenericEvent

	buildMu  sync.Mutex
	building map[string]error // version -> nil while building, error if it failed

	// desired holds the size the autoscaler decided per pool
	// ("cluster-uid/pool" -> int) until status.workers[].desired says it.
	desired sync.Map
	// unplaceable holds, per cluster, the pending pods no pool can take
	// and why (for the pools' status).
	unplaceable sync.Map

	watches tenantWatches
}

// NotifyAddons is the addon keeper's Changed hook: an addon's health
// changed, so the cluster's status follows.
func (r *Reconciler) NotifyAddons(key string) { r.NotifyProcess(key) }

// NotifyProcess is the supervisor's OnChange hook.
func (r *Reconciler) NotifyProcess(processName string) {
	if ref, ok := clusterref.ParseKey(processName); ok {
		r.enqueue(ref.Namespace, ref.Name)
	}
}

// SetupWithManager registers the reconciler.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.ProcessEvents == nil {
		r.ProcessEvents = make(chan event.GenericEvent, 256)
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&lotsev1.Cluster{}).
		Owns(&corev1.Secret{}).
		Owns(&lotsev1.Machine{}).
		WatchesRawSource(source.Channel(r.ProcessEvents, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

// Reconcile brings one Cluster towards its spec.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	cluster := &lotsev1.Cluster{}
	if err := r.Client.Get(ctx, req.NamespacedName, cluster); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !cluster.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, cluster)
	}
	if cluster.Annotations[lotsev1.PausedAnnotation] == "true" {
		logger.V(1).Info("reconciliation paused", "annotation", lotsev1.PausedAnnotation)
		return ctrl.Result{}, nil
	}
	if controllerutil.AddFinalizer(cluster, lotsev1.ClusterFinalizer) {
		// The default maintenance window goes into the spec with the
		// finalizer, in one write: the maintenance controller would
		// otherwise write the spec once more, and every controller of
		// the Cluster would look at it again.
		window := cluster.Spec.Maintenance.TimeWindow == nil
		if window {
			begin, end := maintenance.Default(string(cluster.UID))
			cluster.Spec.Maintenance.TimeWindow = &lotsev1.MaintenanceTimeWindow{Begin: begin, End: end}
		}
		if err := r.Client.Update(ctx, cluster); err != nil {
			return ctrl.Result{}, err
		}
		if window {
			r.event(cluster, corev1.EventTypeNormal, "MaintenanceWindowChosen", "Maintain", "maintenance window %s to %s (daily)",
				cluster.Spec.Maintenance.TimeWindow.Begin, cluster.Spec.Maintenance.TimeWindow.End)
		}
	}

	// observedGeneration moves only once this generation is reconciled
	// (below); until then the status describes the one before.
	status := cluster.Status.DeepCopy()
	opType := lotsev1.OperationReconcile
	if status.LastOperation == nil || (status.LastOperation.Type == lotsev1.OperationCreate && status.LastOperation.State != lotsev1.StateSucceeded) {
		opType = lotsev1.OperationCreate
	}

	if cluster.Hibernating() {
		// A sleeping cluster rotates nothing: a request is refused.
		if err := r.acceptRotation(ctx, cluster, status, false); err != nil {
			return ctrl.Result{}, err
		}
		// Before the release checks: a sleeping cluster needs no binaries,
		// and an expired version may still go to sleep.
		return r.hibernate(ctx, cluster, status, controlplane.Spec{Key: refOf(cluster).Key()})
	}
	release, err := releases.Lookup(cluster.Spec.Kubernetes.Version)
	if err != nil {
		// Schema validation keeps this from happening unless the catalog
		// shrank under an existing cluster.
		r.setOperation(status, opType, lotsev1.StateError, 0, err.Error(), nil)
		status.Phase = lotsev1.PhaseFailed
		setCondition(status, cluster.Generation, lotsev1.ConditionReady, false, "UnsupportedVersion", err.Error())
		return ctrl.Result{}, r.writeStatus(ctx, cluster, status)
	}
	if err := releases.CheckTarget(cluster.Status.KubernetesVersion, release.Version, time.Now()); err != nil {
		// The schema refuses what it can; an expiration date that came
		// after it was generated is caught here. The control plane keeps
		// running at the version it has.
		msg := "spec.kubernetes.version: " + err.Error()
		r.setOperation(status, opType, lotsev1.StateError, 0, msg, nil)
		setCondition(status, cluster.Generation, lotsev1.ConditionReady, false, "UnsupportedVersion", msg)
		if status.Phase == "" {
			status.Phase = lotsev1.PhaseFailed
		}
		r.event(cluster, corev1.EventTypeWarning, "UnsupportedVersion", "Reconcile", "%s", msg)
		return ctrl.Result{RequeueAfter: time.Minute}, r.writeStatus(ctx, cluster, status)
	}
	bins, ready, err := r.binaries(ctx, release)
	if err != nil || !ready {
		msg := fmt.Sprintf("building kubernetes %s binaries (about 10 minutes on a cold cache)", release.Version)
		state := lotsev1.StateProcessing
		if err != nil {
			msg, state = fmt.Sprintf("building kubernetes %s failed: %v", release.Version, err), lotsev1.StateError
		}
		r.setOperation(status, opType, state, 0, msg, nil)
		if status.Phase == "" {
			status.Phase = lotsev1.PhasePending
		}
		return ctrl.Result{RequeueAfter: 10 * time.Second}, r.writeStatus(ctx, cluster, status)
	}

	if (cluster.Spec.ControlPlane.SeedSelector != nil || r.SeedsOnly) && status.Seed == "" {
		if placed, res, err := r.placeOnSeed(ctx, cluster, status, opType); !placed {
			return res, err
		}
	}
	spec := SpecFor(cluster, bins)
	spec.Seed = status.Seed
	if err := r.withCloudController(cluster, &spec, release); err != nil {
		return ctrl.Result{}, err
	}
	if cluster.Annotations[lotsev1.RestoreAnnotation] != "" {
		if done, res, err := r.restore(ctx, cluster, status, spec, release); done {
			return res, err
		}
	}
	upgrading := status.Upgrade != nil || (status.KubernetesVersion != "" && status.KubernetesVersion != release.Version)
	if err := r.acceptRotation(ctx, cluster, status, upgrading); err != nil {
		return ctrl.Result{}, err
	}
	spec.Rotation = rotationStages(status)
	waking := hibernationStarted(status)
	awake := !waking
	if waking {
		if awake, err = r.wakeUp(ctx, cluster, spec); err != nil {
			return ctrl.Result{}, err
		}
	}
	graph := r.Backend.Tasks(spec)
	controlPlaneTasks := map[string]bool{}
	for _, t := range graph {
		controlPlaneTasks[t.Name] = true
	}
	if spec.CloudController != nil && !controlPlaneTasks[cloudControllerTask] {
		// A backend that runs no cloud controller manager of the
		// cluster's (the router sent it to a seed): the manager's own
		// controllers serve it.
		spec.CloudController = nil
	}
	graph = append(graph, tasks.Task{
		Name:      TaskKubeconfigSecret,
		DependsOn: []string{r.EndpointTask(spec)},
		Run: func(ctx context.Context) (bool, string, error) {
			return true, "", r.ensureKubeconfigSecret(ctx, cluster, spec)
		},
	})
	graph = append(graph, r.kubernetesServiceTask(spec))
	graph = append(graph, r.workerTasks(cluster, spec)...)
	results, err := tasks.Run(ctx, graph)
	if err != nil {
		return ctrl.Result{}, err
	}
	cp := r.Backend.Status(ctx, spec)

	state := lotsev1.StateProcessing
	if results.Done() {
		state = lotsev1.StateSucceeded
	} else if _, failed := results.FirstError(); failed {
		state = lotsev1.StateError
	}
	previousPhase := status.Phase
	r.setOperation(status, opType, state, results.Progress(), results.Describe(), results)
	status.Endpoint = cp.Endpoint
	r.trackUpgrade(ctx, cluster, status, release.Version, cp, results.Done())
	if results.Done() && rotationRunning(status) {
		if err := r.advanceRotations(ctx, cluster, status, spec); err != nil {
			return ctrl.Result{}, err
		}
	}
	if results.Done() && !upgrading && !rotationRunning(status) {
		r.followEncryptionProvider(cluster, status, cp)
	}
	if results.Done() {
		status.ObservedGeneration = cluster.Generation
		status.KubernetesVersion = release.Version
		status.KubeconfigSecret = KubeconfigSecretName(cluster.Name)
	}
	applyHealth(status, cluster.Generation, results, cp)
	if err := r.workerStatus(ctx, cluster, status); err != nil {
		return ctrl.Result{}, err
	}
	if len(cluster.Spec.Workers) > 0 && meta.IsStatusConditionTrue(status.Conditions, lotsev1.ConditionReady) &&
		!meta.IsStatusConditionTrue(status.Conditions, lotsev1.ConditionEveryNodeReady) {
		setCondition(status, cluster.Generation, lotsev1.ConditionReady, false, "NodesNotReady", "some machines are not Ready nodes yet")
	}
	if access, err := r.Backend.NodeAccess(spec); err == nil {
		status.NodesCIDR = access.NodesCIDR
	}

	healthy := meta.IsStatusConditionTrue(status.Conditions, lotsev1.ConditionReady)
	switch {
	case healthy:
		status.Phase = lotsev1.PhaseRunning
	case opType == lotsev1.OperationCreate:
		status.Phase = lotsev1.PhaseCreating
	case cluster.Status.ObservedGeneration != cluster.Generation || status.Upgrade != nil ||
		(!results.Done() && !controlPlanePending(results, controlPlaneTasks)):
		// A change on its way (spec, version, pools rolling).
		status.Phase = lotsev1.PhaseUpdating
	default:
		status.Phase = lotsev1.PhaseUnhealthy
	}
	switch {
	case waking && awake && results.Done():
		// Awake once everything runs again and hibernation's marks are
		// gone; health is then the ordinary conditions' business.
		status.Hibernation.Since, status.Hibernation.Hibernated, status.Hibernation.Step = nil, false, ""
		r.event(cluster, corev1.EventTypeNormal, "Woken", "Wake", "the cluster is awake: control plane, machines and nodes are back")
		metrics.HibernationsTotal.WithLabelValues(cluster.Namespace, cluster.Name, "wake").Inc()
	case waking:
		status.Phase = lotsev1.PhaseWaking
		status.Hibernation.Hibernated, status.Hibernation.Step = false, "starting the control plane and the machines"
	}
	if status.Restore != nil && status.Restore.Step == lotsev1.RestoreStepStarting {
		if !controlPlanePending(results, controlPlaneTasks) && cp.APIServerAvailable {
			if err := r.finishRestore(ctx, cluster, status); err != nil {
				return ctrl.Result{}, err
			}
		} else {
			status.Phase = lotsev1.PhaseRestoring
		}
	}
	scheduleTimes(cluster, status, time.Now())
	if previousPhase != status.Phase {
		logger.Info("phase changed", "from", previousPhase, "to", status.Phase)
		kind := corev1.EventTypeNormal
		if status.Phase == lotsev1.PhaseUnhealthy || status.Phase == lotsev1.PhaseFailed {
			kind = corev1.EventTypeWarning
		}
		r.event(cluster, kind, "Phase"+string(status.Phase), "Reconcile", "cluster is %s: %s", status.Phase, status.LastOperation.Description)
	}
	if err := r.writeStatus(ctx, cluster, status); err != nil {
		return ctrl.Result{}, err
	}
	switch {
	case controlPlanePending(results, controlPlaneTasks) && spec.Seed != "":
		// Pods on a seed take seconds to start, and every look reads
		// and applies objects there: look every few seconds.
		return ctrl.Result{RequeueAfter: seedPendingRequeue}, nil
	case controlPlanePending(results, controlPlaneTasks):
		// The control plane's processes become ready within seconds and
		// nothing announces it; look often so the cluster is reported
		// available promptly.
		return ctrl.Result{RequeueAfter: 200 * time.Millisecond}, nil
	case rotationRunning(status):
		// The next step of a rotation starts once this one is done.
		return ctrl.Result{RequeueAfter: time.Second}, nil
	case !results.Done() || !healthy:
		// Machines (owned objects), the supervisor's process events and
		// the tenant watches (addons, nodes) bring changes at once; this
		// is the backstop.
		return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
	case slices.ContainsFunc(cluster.Spec.Workers, autoscaled):
		// Autoscaled pools: unneeded nodes are found by looking.
		return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
	default:
		// Care: look at the health again even if nothing changes.
		return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
	}
}

// controlPlanePending reports whether a task of the control plane itself
// has not succeeded yet.
func controlPlanePending(results tasks.Results, controlPlane map[string]bool) bool {
	for _, res := range results {
		if controlPlane[res.Name] && res.State != tasks.Succeeded {
			return true
		}
	}
	return false
}

// FleetControllers are the controller-manager's controllers in a fleet's
// control plane: those that keep the API itself in order (namespaces,
// garbage collection, service accounts and their tokens, RBAC
// aggregation), and those that give pull-mode members' agents their
// identity (signing the certificate requests Lotse approved, cleaning
// expired bootstrap tokens and old requests); none that turns a template
// into pods or endpoints.
var FleetControllers = []string{"namespace-controller", "garbage-collector-controller", "serviceaccount-token-controller",
	"serviceaccount-controller", "clusterrole-aggregation-controller", "root-ca-certificate-publisher-controller",
	"ttl-after-finished-controller", "legacy-serviceaccount-token-cleaner-controller",
	"certificatesigningrequest-signing-controller", "certificatesigningrequest-cleaner-controller", "token-cleaner-controller"}

// SpecFor turns a Cluster into the backend's control-plane spec.
func SpecFor(c *lotsev1.Cluster, bins releases.Binaries) controlplane.Spec {
	resources := make([]string, 0, len(c.Spec.Encryption.Resources))
	for _, r := range c.Spec.Encryption.Resources {
		resources = append(resources, string(r))
	}
	var controllers []string
	if c.Spec.Purpose == lotsev1.PurposeFleet {
		controllers = FleetControllers
	}
	return controlplane.Spec{
		Seed:               c.Status.Seed,
		Controllers:        controllers,
		Key:                refOf(c).Key(),
		Name:               c.Name,
		Binaries:           bins,
		HighAvailability:   c.Spec.ControlPlane.HighAvailability,
		SharedDatastore:    c.Spec.ControlPlane.Datastore == lotsev1.DatastoreShared,
		PodCIDR:            c.Spec.Networking.Pods,
		ServiceCIDR:        c.Spec.Networking.Services,
		NodesCIDR:          c.Spec.Networking.Nodes,
		EncryptionProvider: c.Spec.Encryption.Provider,
		EncryptedResources: resources,
	}
}

// binaries returns a release's binaries, starting a background build the
// first time they are missing (a reconcile must not block for minutes).
func (r *Reconciler) binaries(ctx context.Context, rel releases.Release) (releases.Binaries, bool, error) {
	if bins, err := r.Releases.Binaries(rel); err == nil {
		return bins, true, nil
	}
	r.buildMu.Lock()
	defer r.buildMu.Unlock()
	if r.building == nil {
		r.building = map[string]error{}
	}
	if err, started := r.building[rel.Version]; started {
		if err != nil {
			delete(r.building, rel.Version) // retry on the next reconcile
		}
		return releases.Binaries{}, false, err
	}
	r.building[rel.Version] = nil
	go func() {
		logw := r.BuildLog
		if logw == nil {
			logw = io.Discard
		}
		_, err := r.Releases.Ensure(context.WithoutCancel(ctx), rel, logw)
		r.buildMu.Lock()
		if err != nil {
			r.building[rel.Version] = err
		} else {
			delete(r.building, rel.Version)
		}
		r.buildMu.Unlock()
	}()
	return releases.Binaries{}, false, nil
}
