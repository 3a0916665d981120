package seed

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// recheck is how often a seed's reachability is looked at.
const recheck = 30 * time.Second

// Reconciler reconciles Seeds.
type Reconciler struct {
	Client client.Client
	// Reader reads uncached: the seeds' Secrets, and the clusters a
	// deleted seed still hosts.
	Reader   client.Reader
	Recorder events.EventRecorder
	// Management reaches the seed marked spec.managementCluster.
	Management *rest.Config
	// ImagesProvided: the seeds' nodes get the control planes' images
	// themselves (the manager's own, --control-plane-image, or pushed to
	// the registry they pull from, --image-registry), so a seed need not
	// be a Lotse cluster of this host for Lotse to load them.
	ImagesProvided bool
}

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr manager.Manager) error {
	toSeed := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		c, ok := o.(*lotsev1.Cluster)
		if !ok || c.Status.Seed == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: c.Status.Seed}}}
	})
	return builder.ControllerManagedBy(mgr).Named("seed").For(&lotsev1.Seed{}).
		Watches(&lotsev1.Cluster{}, toSeed).
		Complete(r)
}

// Hosted counts the control planes on each seed, by the clusters'
// status, and names them.
func Hosted(clusters []lotsev1.Cluster) (map[string]int, map[string][]string) {
	count, names := map[string]int{}, map[string][]string{}
	for _, c := range clusters {
		if c.Status.Seed == "" {
			continue
		}
		count[c.Status.Seed]++
		names[c.Status.Seed] = append(names[c.Status.Seed], c.Namespace+"/"+c.Name)
	}
	return count, names
}

// Reconcile brings one Seed's status and finalizer up to date.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	s := &lotsev1.Seed{}
	if err := r.Client.Get(ctx, req.NamespacedName, s); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	clusters := &lotsev1.ClusterList{}
	var reader client.Reader = r.Client
	if s.DeletionTimestamp != nil {
		reader = r.Reader // let go only on what the API itself says
	}
	if err := reader.List(ctx, clusters); err != nil {
		return reconcile.Result{}, err
	}
	count, names := Hosted(clusters.Items)
	hosted := names[s.Name]
	sort.Strings(hosted)

	if s.DeletionTimestamp != nil {
		if len(hosted) == 0 {
			if controllerutil.RemoveFinalizer(s, lotsev1.SeedFinalizer) {
				return reconcile.Result{}, r.Client.Update(ctx, s)
			}
			return reconcile.Result{}, nil
		}
		before := s.DeepCopy()
		msg := fmt.Sprintf("the seed hosts the control planes of %s; it goes once they are deleted", strings.Join(hosted, ", "))
		if !meta.IsStatusConditionTrue(s.Status.Conditions, lotsev1.ConditionSeedDeletionBlocked) {
			r.Recorder.Eventf(s, nil, corev1.EventTypeWarning, "DeletionBlocked", "Delete", "%s", msg)
		}
		meta.SetStatusCondition(&s.Status.Conditions, metav1.Condition{Type: lotsev1.ConditionSeedDeletionBlocked, Status: metav1.ConditionTrue,
			Reason: "HostsControlPlanes", Message: msg, ObservedGeneration: s.Generation})
		s.Status.ControlPlanes = int32(count[s.Name])
		if err := r.Client.Status().Patch(ctx, s, client.MergeFrom(before)); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{RequeueAfter: 10 * time.Second}, nil
	}
	if controllerutil.AddFinalizer(s, lotsev1.SeedFinalizer) {
		if err := r.Client.Update(ctx, s); err != nil {
			return reconcile.Result{}, err
		}
	}

	before := s.DeepCopy()
	ready, reason, msg := r.probe(ctx, s)
	status := metav1.ConditionFalse
	if ready {
		status = metav1.ConditionTrue
	}
	if c := meta.FindStatusCondition(s.Status.Conditions, lotsev1.ConditionSeedReady); c != nil && c.Status != status {
		eventType := corev1.EventTypeWarning
		if ready {
			eventType = corev1.EventTypeNormal
		}
		r.Recorder.Eventf(s, nil, eventType, reason, "Check", "%s", msg)
	}
	meta.SetStatusCondition(&s.Status.Conditions, metav1.Condition{Type: lotsev1.ConditionSeedReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: s.Generation})
	meta.RemoveStatusCondition(&s.Status.Conditions, lotsev1.ConditionSeedDeletionBlocked)
	s.Status.ControlPlanes = int32(count[s.Name])
	s.Status.ObservedGeneration = s.Generation
	if err := r.Client.Status().Patch(ctx, s, client.MergeFrom(before)); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: recheck}, nil
}

// probe asks the seed for its version and nodes.
func (r *Reconciler) probe(ctx context.Context, s *lotsev1.Seed) (bool, string, string) {
	conn := &Connector{Reader: r.Reader, Management: r.Management}
	cfg, err := conn.Config(ctx, s.Name)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return false, "KubeconfigMissing", err.Error()
		}
		return false, "KubeconfigInvalid", err.Error()
	}
	cfg.Timeout = 10 * time.Second
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return false, "KubeconfigInvalid", err.Error()
	}
	v, err := kube.Discovery().ServerVersion()
	if err != nil {
		return false, "Unreachable", fmt.Sprintf("the seed's API does not answer: %v", err)
	}
	s.Status.KubernetesVersion = v.GitVersion
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, "Unreachable", fmt.Sprintf("listing the seed's nodes: %v", err)
	}
	ready := int32(0)
	for _, n := range nodes.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready++
			}
		}
	}
	s.Status.ReadyNodes = ready
	if ready == 0 {
		return false, "NoReadyNodes", fmt.Sprintf("the seed has %d nodes and none is Ready", len(nodes.Items))
	}
	// The control planes' images are imported into the machines of a
	// Lotse cluster of this host; any other seed would need a registry.
	if r.ImagesProvided {
		return true, "Reachable", fmt.Sprintf("Kubernetes %s, %d Ready nodes", v.GitVersion, ready)
	}
	if _, isLotse, err := conn.LotseCluster(ctx, s.Name); err != nil {
		return false, "KubeconfigInvalid", err.Error()
	} else if !isLotse {
		return false, "ImagesUnavailable", "the seed is not a Lotse cluster of this management plane, so the control planes' images cannot be loaded into its nodes; give the manager a registry the seed's nodes pull from (lotse manager --image-registry), or use a Lotse cluster's NAME-kubeconfig Secret"
	}
	return true, "Reachable", fmt.Sprintf("Kubernetes %s, %d Ready nodes", v.GitVersion, ready)
}
