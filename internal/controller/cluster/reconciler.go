// Package cluster reconciles Cluster objects: it turns a Cluster's spec into
// a hosted control plane through a graph of named tasks, writes the admin
// kubeconfig Secret, and reports progress and health in the status.
package cluster

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/machine"
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
	// BuildLog receives the output of release builds started on demand.
	BuildLog io.Writer

	// Tenants caches clients of tenant clusters.
	Tenants *tenant.Clients
	// DNSUpstreams are the resolvers CoreDNS forwards to; empty keeps DNS
	// inside the cluster (the default: local clusters send nothing out).
	DNSUpstreams []string

	// ProcessEvents carries supervisor notifications (a process of a
	// cluster started or died) so status follows within a second.
	ProcessEvents chan event.GenericEvent

	buildMu  sync.Mutex
	building map[string]error // version -> nil while building, error if it failed

	pulls pullWatches
}

// NotifyProcess is the supervisor's OnChange hook.
func (r *Reconciler) NotifyProcess(processName string) {
	ref, ok := clusterref.ParseKey(processName)
	if !ok || r.ProcessEvents == nil {
		return
	}
	c := &lotsev1.Cluster{}
	c.Namespace, c.Name = ref.Namespace, ref.Name
	select {
	case r.ProcessEvents <- event.GenericEvent{Object: c}:
	default: // a reconcile is already queued; the periodic requeue covers the rest
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
		if err := r.Client.Update(ctx, cluster); err != nil {
			return ctrl.Result{}, err
		}
	}

	status := cluster.Status.DeepCopy()
	status.ObservedGeneration = cluster.Generation
	opType := lotsev1.OperationReconcile
	if status.LastOperation == nil || (status.LastOperation.Type == lotsev1.OperationCreate && status.LastOperation.State != lotsev1.StateSucceeded) {
		opType = lotsev1.OperationCreate
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

	spec := SpecFor(cluster, bins)
	graph := r.Backend.Tasks(spec)
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
	if results.Done() {
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
	case cluster.Status.ObservedGeneration != cluster.Generation || !results.Done():
		status.Phase = lotsev1.PhaseUpdating
	default:
		status.Phase = lotsev1.PhaseUnhealthy
	}
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
	case !results.Done():
		// Creation waits on processes that become ready within seconds;
		// look often so the cluster is reported available promptly.
		return ctrl.Result{RequeueAfter: 200 * time.Millisecond}, nil
	case !healthy:
		return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
	default:
		// Care: look at the health again even if nothing changes.
		return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
	}
}

// SpecFor turns a Cluster into the backend's control-plane spec.
func SpecFor(c *lotsev1.Cluster, bins releases.Binaries) controlplane.Spec {
	resources := make([]string, 0, len(c.Spec.Encryption.Resources))
	for _, r := range c.Spec.Encryption.Resources {
		resources = append(resources, string(r))
	}
	return controlplane.Spec{
		Key:                refOf(c).Key(),
		Name:               c.Name,
		Binaries:           bins,
		HighAvailability:   c.Spec.ControlPlane.HighAvailability,
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

func (r *Reconciler) ensureKubeconfigSecret(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) error {
	data, err := r.Backend.AdminKubeconfig(spec)
	if err != nil {
		return err
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: KubeconfigSecretName(c.Name)}}
	_, err = controllerutil.CreateOrUpdate(ctx, r.Client, secret, func() error {
		if secret.Labels == nil {
			secret.Labels = map[string]string{}
		}
		secret.Labels["lotse.dev/cluster"] = c.Name
		secret.Type = corev1.SecretTypeOpaque
		secret.Data = map[string][]byte{"kubeconfig": data}
		return controllerutil.SetControllerReference(c, secret, r.Client.Scheme())
	})
	return err
}

func (r *Reconciler) reconcileDelete(ctx context.Context, c *lotsev1.Cluster) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(c, lotsev1.ClusterFinalizer) {
		return ctrl.Result{}, nil
	}
	status := c.Status.DeepCopy()
	if status.Phase != lotsev1.PhaseDeleting {
		status.Phase = lotsev1.PhaseDeleting
		r.setOperation(status, lotsev1.OperationDelete, lotsev1.StateProcessing, 0, "stopping the control plane and removing its data", nil)
		if err := r.writeStatus(ctx, c, status); err != nil {
			return ctrl.Result{}, err
		}
		r.event(c, corev1.EventTypeNormal, "Deleting", "Delete", "deleting the control plane")
	}
	// Machines first: their finalizers drain nodes and clean up the host.
	gone, err := r.deleteMachines(ctx, c)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !gone {
		r.setOperation(status, lotsev1.OperationDelete, lotsev1.StateProcessing, 0, "waiting for the machines to be deleted", nil)
		_ = r.writeStatus(ctx, c, status)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	ref := refOf(c)
	if r.Provider != nil {
		// Sweep whatever machines left (a machine whose object vanished
		// with its finalizer removed by hand), then the network itself.
		if err := r.Provider.DeleteNetwork(ctx, ref); err != nil {
			return ctrl.Result{}, err
		}
	}
	if r.Tenants != nil {
		r.Tenants.Forget(ref.Key())
	}
	if err := r.Backend.Delete(ctx, ref.Key()); err != nil {
		r.setOperation(status, lotsev1.OperationDelete, lotsev1.StateError, 0, err.Error(), nil)
		_ = r.writeStatus(ctx, c, status)
		return ctrl.Result{}, err
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: KubeconfigSecretName(c.Name)}}
	if err := r.Client.Delete(ctx, secret); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	controllerutil.RemoveFinalizer(c, lotsev1.ClusterFinalizer)
	if err := r.Client.Update(ctx, c); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

func (r *Reconciler) setOperation(status *lotsev1.ClusterStatus, opType, state string, progress int32, desc string, results tasks.Results) {
	op := &lotsev1.LastOperation{Type: opType, State: state, Progress: progress, Description: desc, LastUpdateTime: metav1.Now()}
	for _, res := range results {
		op.Tasks = append(op.Tasks, lotsev1.TaskStatus{Name: res.Name, State: res.State, Message: truncate(res.Message, 512)})
	}
	// Keep the timestamp stable when nothing else changed, so a converged
	// cluster does not rewrite its status every care cycle.
	if old := status.LastOperation; old != nil && sameOperation(old, op) {
		op.LastUpdateTime = old.LastUpdateTime
	}
	status.LastOperation = op
}

func sameOperation(a, b *lotsev1.LastOperation) bool {
	if a.Type != b.Type || a.State != b.State || a.Progress != b.Progress || a.Description != b.Description || len(a.Tasks) != len(b.Tasks) {
		return false
	}
	for i := range a.Tasks {
		if a.Tasks[i] != b.Tasks[i] {
			return false
		}
	}
	return true
}

func applyHealth(status *lotsev1.ClusterStatus, gen int64, results tasks.Results, cp controlplane.Status) {
	if cp.APIServerAvailable {
		setCondition(status, gen, lotsev1.ConditionAPIServerAvailable, true, "HealthzOK", "the API server answers /readyz at "+cp.Endpoint)
	} else {
		msg := cp.APIServerMessage
		if msg == "" {
			msg = "the API server is not ready yet"
		}
		setCondition(status, gen, lotsev1.ConditionAPIServerAvailable, false, "HealthzFailed", msg)
	}
	if cp.Healthy() {
		setCondition(status, gen, lotsev1.ConditionControlPlaneHealthy, true, "AllComponentsHealthy", fmt.Sprintf("%d control-plane processes healthy", len(cp.Components)))
	} else {
		var parts []string
		for _, c := range cp.Unhealthy() {
			parts = append(parts, c.Name+": "+c.Message)
		}
		msg := strings.Join(parts, "; ")
		if msg == "" {
			msg = "control plane not created yet"
		}
		setCondition(status, gen, lotsev1.ConditionControlPlaneHealthy, false, "ComponentsUnhealthy", truncate(msg, 1024))
	}
	switch {
	case !results.Done():
		setCondition(status, gen, lotsev1.ConditionReady, false, "Reconciling", results.Describe())
	case !cp.APIServerAvailable:
		setCondition(status, gen, lotsev1.ConditionReady, false, "APIServerUnavailable", "the API server does not answer")
	case !cp.Healthy():
		setCondition(status, gen, lotsev1.ConditionReady, false, "ControlPlaneUnhealthy", "some control-plane processes are not healthy")
	default:
		setCondition(status, gen, lotsev1.ConditionReady, true, "ClusterReady", "the cluster is reconciled and healthy")
	}
}

func setCondition(status *lotsev1.ClusterStatus, gen int64, typ string, ok bool, reason, msg string) {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
}

func (r *Reconciler) writeStatus(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus) error {
	if equalStatus(&c.Status, status) {
		return nil
	}
	c.Status = *status
	err := r.Client.Status().Update(ctx, c)
	if apierrors.IsConflict(err) {
		// Someone changed the object; the watch brings us back with the new one.
		return nil
	}
	return err
}

func equalStatus(a, b *lotsev1.ClusterStatus) bool {
	return a.ObservedGeneration == b.ObservedGeneration && a.Phase == b.Phase && a.Endpoint == b.Endpoint &&
		a.KubernetesVersion == b.KubernetesVersion && a.KubeconfigSecret == b.KubeconfigSecret &&
		a.NodesCIDR == b.NodesCIDR && slices.Equal(a.Workers, b.Workers) &&
		(a.LastOperation == nil) == (b.LastOperation == nil) &&
		(a.LastOperation == nil || (sameOperation(a.LastOperation, b.LastOperation) && a.LastOperation.LastUpdateTime.Equal(&b.LastOperation.LastUpdateTime))) &&
		conditionsEqual(a.Conditions, b.Conditions)
}

func conditionsEqual(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message || x.ObservedGeneration != y.ObservedGeneration {
			return false
		}
	}
	return true
}

func (r *Reconciler) event(c *lotsev1.Cluster, kind, reason, action, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(c, nil, kind, reason, action, note, args...)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
