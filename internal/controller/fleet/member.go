package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	untrustedkubeconfig "github.com/lotse/lotse/internal/kubeconfig"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	clustercontroller "github.com/lotse/lotse/internal/controller/cluster"
	"github.com/lotse/lotse/internal/federation/access"
	"github.com/lotse/lotse/internal/federation/placement"
	"github.com/lotse/lotse/internal/federation/propagation"
)

// FinalizerMember keeps a FleetMember until the fleet's copies are gone
// from the member.
const FinalizerMember = "lotse.dev/fleet-member"

// AnnotationKeepResources "true" on a FleetMember leaves the fleet's copies
// in the member when it leaves.
const AnnotationKeepResources = "lotse.dev/keep-resources"

// unjoinGrace is how long a leaving member that cannot be cleaned (it does
// not answer) is waited for.
const unjoinGrace = time.Minute

// probeInterval is how often members are probed.
const probeInterval = 5 * time.Second

// memberKubeconfig returns the kubeconfig that reaches a member.
func (r *Reconciler) memberKubeconfig(ctx context.Context, m *lotsev1.FleetMember) ([]byte, error) {
	if m.Spec.KubeconfigSecretRef != nil {
		return r.secretKubeconfig(ctx, m.Namespace, m.Spec.KubeconfigSecretRef.Name)
	}
	return r.clusterKubeconfig(ctx, m.Namespace, m.Spec.Cluster)
}

func (r *Reconciler) reconcileMember(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	m := &lotsev1.FleetMember{}
	if err := r.Client.Get(ctx, req.NamespacedName, m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	fleetKey := client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.Fleet}.String()
	if !m.DeletionTimestamp.IsZero() {
		return r.unjoin(ctx, m, fleetKey)
	}
	if controllerutil.AddFinalizer(m, FinalizerMember) {
		if err := r.Client.Update(ctx, m); err != nil {
			return ctrl.Result{}, err
		}
	}
	status := m.Status.DeepCopy()
	status.ObservedGeneration = m.Generation
	now := metav1.Now()
	status.LastProbeTime = &now
	ready := metav1.Condition{Type: lotsev1.ConditionMemberReady, Status: metav1.ConditionTrue, Reason: "Ready", ObservedGeneration: m.Generation,
		Message: "the member's API server answers /readyz"}
	status.Region, status.Zone, status.Provider = m.Spec.Region, m.Spec.Zone, m.Spec.Provider
	if m.Spec.Cluster != "" {
		cl := &lotsev1.Cluster{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.Cluster}, cl); err == nil {
			if status.Region == "" {
				status.Region = cl.Spec.Region
			}
			if status.Provider == "" {
				status.Provider = "lotse"
			}
		}
	}
	if isPull(m) {
		if err := r.pullMember(ctx, m, status, &ready); err != nil {
			return ctrl.Result{}, err
		}
	} else if kubeconfig, err := r.memberKubeconfig(ctx, m); err != nil {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, "NoCredentials", err.Error()
	} else if p, err := probe(ctx, kubeconfig); err != nil {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonUnreachable, err.Error()
	} else {
		status.KubernetesVersion = p.version
		if p.summary != nil {
			status.ResourceSummary = p.summary
		}
		if status.Zone == "" {
			status.Zone = p.zone
		}
		switch {
		case p.nodes == 0:
			ready.Message += "; it has no nodes"
		case p.readyNodes == 0:
			// It answers but cannot run anything: its share moves on
			// after the placements' toleration.
			ready.Status, ready.Reason = metav1.ConditionFalse, ReasonNoReadyNode
			ready.Message = fmt.Sprintf("the member answers, but none of its %d nodes is Ready", p.nodes)
		default:
			ready.Message += fmt.Sprintf("; %d of %d nodes Ready", p.readyNodes, p.nodes)
		}
	}
	was := meta.FindStatusCondition(m.Status.Conditions, lotsev1.ConditionMemberReady)
	meta.SetStatusCondition(&status.Conditions, ready)
	changed := was == nil || was.Status != ready.Status || was.Reason != ready.Reason
	// Write when something changed, and refresh lastProbeTime each minute
	// (not on every probe: each write wakes the fleet's controllers).
	stale := m.Status.LastProbeTime == nil || now.Sub(m.Status.LastProbeTime.Time) > time.Minute
	unchanged := m.Status.DeepCopy()
	unchanged.LastProbeTime = status.LastProbeTime
	// The room changes with every pod: alone, it is written at most every
	// 30 s (each write wakes the fleet's controllers and this one).
	unchanged.ResourceSummary = status.ResourceSummary
	roomOnly := !equality.Semantic.DeepEqual(m.Status.ResourceSummary, status.ResourceSummary) && equality.Semantic.DeepEqual(unchanged, status)
	roomDue := roomOnly && (m.Status.LastProbeTime == nil || now.Sub(m.Status.LastProbeTime.Time) > 30*time.Second)
	if stale || roomDue || (!roomOnly && !equality.Semantic.DeepEqual(unchanged, status)) {
		m.Status = *status
		if err := r.Client.Status().Update(ctx, m); err != nil {
			return ctrl.Result{}, err
		}
	}
	if changed {
		r.event(m, corev1.EventTypeNormal, "Member"+ready.Reason, "%s", ready.Message)
		if e := r.engine(fleetKey); e != nil {
			// Now, and once more when the manager's cache has the new
			// status (the engine reads members from it).
			e.ResyncAll()
			time.AfterFunc(time.Second, e.ResyncAll)
		}
	}
	return ctrl.Result{RequeueAfter: probeInterval}, nil
}

// Reasons of a member's Ready condition.
const (
	ReasonUnreachable = "Unreachable"
	ReasonNoReadyNode = "NoReadyNode"
)

// probed is what a probe learnt of a member.
type probed struct {
	version, zone     string
	nodes, readyNodes int
	summary           *lotsev1.ResourceSummary
}

// probe asks a member's API server for /readyz and its version, and counts
// its Ready nodes (the zone is the first node's topology label).
func probe(ctx context.Context, kubeconfig []byte) (probed, error) {
	var p probed
	cfg, err := untrustedkubeconfig.ParseUntrusted(kubeconfig)
	if err != nil {
		return p, err
	}
	cfg.Timeout = 3 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return p, err
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := readyz(pctx, cs); err != nil {
		return p, err
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		return p, err
	}
	p.version = v.GitVersion
	// The room on the nodes: what their unfinished pods request. Best
	// effort: a member whose pods cannot be listed in time is still
	// healthy; its room is then unknown (the last summary stays).
	podCfg := rest.CopyConfig(cfg)
	podCfg.Timeout = 5 * time.Second // not the probe's 3 s: a large member lists many pods
	podClient, err := kubernetes.NewForConfig(podCfg)
	if err != nil {
		return p, err
	}
	mctx, cancelMeasure := context.WithTimeout(ctx, podCfg.Timeout)
	defer cancelMeasure()
	room, err := placement.Measure(mctx, cs, podClient)
	if err != nil {
		return p, err
	}
	p.nodes, p.readyNodes, p.zone = room.Nodes, room.ReadyNodes, room.Zone
	p.summary = summaryOf(room)
	return p, nil
}

// summaryOf is a member's room as its status says it (nil: unknown).
func summaryOf(room placement.Room) *lotsev1.ResourceSummary {
	if room.Allocated == nil {
		return nil
	}
	return &lotsev1.ResourceSummary{Allocatable: room.Allocatable, Allocated: room.Allocated}
}

// unjoin removes the fleet's copies from a leaving member (unless it says
// to keep them), then lets it go.
func (r *Reconciler) unjoin(ctx context.Context, m *lotsev1.FleetMember, fleetKey string) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(m, FinalizerMember) {
		return ctrl.Result{}, nil
	}
	if isPull(m) {
		done, err := r.removePullMember(ctx, m, m.Annotations[AnnotationKeepResources] == "true")
		if err != nil {
			return ctrl.Result{}, err
		}
		if !done {
			return ctrl.Result{RequeueAfter: probeInterval}, nil
		}
	} else if m.Annotations[AnnotationKeepResources] != "true" {
		kubeconfig, err := r.memberKubeconfig(ctx, m)
		switch {
		case apierrors.IsNotFound(err):
			// The member's credentials are gone (its cluster was deleted):
			// nothing left to clean.
		case err != nil:
			return ctrl.Result{}, err
		default:
			cfg, err := untrustedkubeconfig.ParseUntrusted(kubeconfig)
			if err != nil {
				return ctrl.Result{}, err
			}
			member := propagation.Member{Member: placement.Member{Name: m.Name}, Config: cfg}
			var rerr error
			if e := r.engine(fleetKey); e != nil {
				rerr = e.RemoveCopies(ctx, member)
			} else {
				rerr = removeCopies(ctx, cfg, fleetKey, m.Spec.Fleet)
			}
			if rerr != nil {
				// A member that stays unreachable for the grace period cannot
				// be cleaned: it leaves anyway and the event says what stays.
				// The periodic probe does not run for a leaving member, so
				// its reachability is checked here and kept in its Ready
				// condition; the grace runs from the condition's transition,
				// so one slow answer from a busy member does not let it go.
				unreachableFor, err := r.unreachableFor(ctx, m, kubeconfig)
				if err != nil {
					return ctrl.Result{}, err
				}
				if unreachableFor < unjoinGrace {
					r.event(m, corev1.EventTypeWarning, "UnjoinBlocked", "removing the fleet's resources from the member: %v", rerr)
					return ctrl.Result{RequeueAfter: probeInterval}, nil
				}
				r.event(m, corev1.EventTypeWarning, "UnjoinedUnclean", "the member left after %s without its copies removed (%v); "+
					"objects labelled %s=%s stay in it", unjoinGrace, rerr, lotsev1.LabelFleet, m.Spec.Fleet)
			}
		}
	}
	if res, done := r.revokeIdentity(ctx, m); !done {
		return res, nil
	}
	controllerutil.RemoveFinalizer(m, FinalizerMember)
	if err := r.Client.Update(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	if e := r.engine(fleetKey); e != nil {
		e.ResyncAll()
	}
	return ctrl.Result{}, nil
}

// unreachableFor checks a leaving member's /readyz now and returns how
// long it has been unreachable without a break (0 if it answers),
// recording a change in its Ready condition.
func (r *Reconciler) unreachableFor(ctx context.Context, m *lotsev1.FleetMember, kubeconfig []byte) (time.Duration, error) {
	cond := meta.FindStatusCondition(m.Status.Conditions, lotsev1.ConditionMemberReady)
	wasUnreachable := cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == ReasonUnreachable
	if err := readyzOf(ctx, kubeconfig); err == nil {
		return 0, nil
	} else if !wasUnreachable {
		meta.SetStatusCondition(&m.Status.Conditions, metav1.Condition{Type: lotsev1.ConditionMemberReady, Status: metav1.ConditionFalse,
			Reason: ReasonUnreachable, Message: err.Error(), ObservedGeneration: m.Generation})
		if err := r.Client.Status().Update(ctx, m); err != nil {
			return 0, err
		}
		return 0, nil
	}
	return time.Since(cond.LastTransitionTime.Time), nil
}

// readyz asks a member's API server whether it is ready.
func readyz(ctx context.Context, cs kubernetes.Interface) error {
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("/readyz: %v", err)
	}
	if string(body) != "ok" {
		return fmt.Errorf("/readyz: %s", body)
	}
	return nil
}

// readyzOf is readyz for a kubeconfig, 3 s at most.
func readyzOf(ctx context.Context, kubeconfig []byte) error {
	cfg, err := untrustedkubeconfig.ParseUntrusted(kubeconfig)
	if err != nil {
		return err
	}
	cfg.Timeout = 3 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return readyz(ctx, cs)
}

// AnnotationIdentity on a member's kubeconfig Secret says that the
// kubeconfig is the fleet's own identity in the member (made at join
// time), which leaving deletes.
const AnnotationIdentity = "lotse.dev/fleet-identity"

// revokeIdentity deletes the fleet's own identity in a leaving member, if
// the fleet made one. done is false while that must be retried.
func (r *Reconciler) revokeIdentity(ctx context.Context, m *lotsev1.FleetMember) (ctrl.Result, bool) {
	if m.Spec.KubeconfigSecretRef == nil {
		return ctrl.Result{}, true
	}
	s := &corev1.Secret{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.KubeconfigSecretRef.Name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, true // no credentials, nothing to reach the member with
		}
		return ctrl.Result{RequeueAfter: probeInterval}, false
	}
	if s.Annotations[AnnotationIdentity] == "" {
		return ctrl.Result{}, true
	}
	cfg, err := untrustedkubeconfig.ParseUntrusted(s.Data["kubeconfig"])
	if err == nil {
		cfg.Timeout = 10 * time.Second
		err = access.Revoke(ctx, cfg, m.Namespace, m.Spec.Fleet, m.Name)
	}
	switch {
	case err == nil:
		r.event(m, corev1.EventTypeNormal, "IdentityRevoked", "deleted the fleet's identity %s in the member", s.Annotations[AnnotationIdentity])
		return ctrl.Result{}, true
	case errors.Is(err, access.ErrGone):
		r.event(m, corev1.EventTypeNormal, "IdentityGone", "the fleet's identity %s was gone from the member already", s.Annotations[AnnotationIdentity])
		return ctrl.Result{}, true
	}
	if time.Since(m.DeletionTimestamp.Time) < unjoinGrace {
		r.event(m, corev1.EventTypeWarning, "UnjoinBlocked", "deleting the fleet's identity in the member: %v", err)
		return ctrl.Result{RequeueAfter: probeInterval}, false
	}
	r.event(m, corev1.EventTypeWarning, "UnjoinedUnclean", "the member left after %s with the fleet's identity %s still in it (%v); delete ClusterRole %s there",
		unjoinGrace, s.Annotations[AnnotationIdentity], err, s.Annotations[AnnotationIdentity])
	return ctrl.Result{}, true
}

func removeCopies(ctx context.Context, cfg *rest.Config, fleetKey, fleetName string) error {
	dyn, err := dynamicFor(cfg)
	if err != nil {
		return err
	}
	return propagation.RemoveCopies(ctx, cfg, dyn, fleetKey, fleetName)
}

// memberSource lists a fleet's members for its engine.
type memberSource struct {
	client     client.Client
	namespace  string
	fleet      string
	kubeconfig func(context.Context, *lotsev1.FleetMember) ([]byte, error)
}

func (s *memberSource) Members(ctx context.Context) ([]propagation.Member, error) {
	list := &lotsev1.FleetMemberList{}
	if err := s.client.List(ctx, list, client.InNamespace(s.namespace)); err != nil {
		return nil, err
	}
	var out []propagation.Member
	for i := range list.Items {
		m := &list.Items[i]
		if m.Spec.Fleet != s.fleet || !m.DeletionTimestamp.IsZero() {
			continue
		}
		member := propagation.Member{
			Member: placement.Member{Name: m.Name, Labels: m.Labels, Region: m.Status.Region, Zone: m.Status.Zone,
				Provider: m.Status.Provider, Available: -1},
			Pull: isPull(m),
		}
		if !member.Pull {
			kubeconfig, err := s.kubeconfig(ctx, m)
			if err != nil {
				continue
			}
			cfg, err := untrustedkubeconfig.ParseUntrusted(kubeconfig)
			if err != nil {
				continue
			}
			sum := sha256.Sum256(kubeconfig)
			member.Config, member.Version = cfg, hex.EncodeToString(sum[:8])
		}
		if rs := m.Status.ResourceSummary; rs != nil {
			member.Free = placement.Free(rs.Allocatable, rs.Allocated)
		}
		if cond := meta.FindStatusCondition(m.Status.Conditions, lotsev1.ConditionMemberReady); cond != nil {
			member.Ready = cond.Status == metav1.ConditionTrue
			member.Reachable = member.Ready || cond.Reason == ReasonNoReadyNode
			if !member.Ready {
				member.NotReadySince = cond.LastTransitionTime.Time
			}
		}
		out = append(out, member)
	}
	return out, nil
}

func dynamicFor(cfg *rest.Config) (dynamic.Interface, error) {
	c := *cfg
	c.Timeout = 10 * time.Second
	return dynamic.NewForConfig(&c)
}

// clusterKubeconfig reads the kubeconfig Lotse wrote for one of its
// clusters, refusing a Secret of that name that Lotse did not write.
func (r *Reconciler) clusterKubeconfig(ctx context.Context, namespace, cluster string) ([]byte, error) {
	s := &corev1.Secret{}
	name := clustercontroller.KubeconfigSecretName(cluster)
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, s); err != nil {
		return nil, err
	}
	if !clustercontroller.IsClusterKubeconfig(s, cluster) {
		return nil, fmt.Errorf("secret %s/%s is not the kubeconfig Lotse wrote for cluster %s (it lacks Lotse's label); Lotse replaces it", namespace, name, cluster)
	}
	return s.Data["kubeconfig"], nil
}
