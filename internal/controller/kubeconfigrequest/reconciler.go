// Package kubeconfigrequest answers KubeconfigRequests: it has the
// requested cluster sign the requester's certificate request through the
// cluster's certificates API (userkubeconfig.Sign) and puts the
// certificate, the server and its CA in the request's status. Who may ask
// for what is decided at admission (the lotse-kubeconfig-requests policy):
// the certificate names the requester, and only who may update the
// Cluster gets the admin role.
package kubeconfigrequest

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	clustercontroller "github.com/lotse/lotse/internal/controller/cluster"
	"github.com/lotse/lotse/internal/controller/patch"
	untrustedkubeconfig "github.com/lotse/lotse/internal/kubeconfig"
	"github.com/lotse/lotse/internal/userkubeconfig"
)

const (
	// giveUpAfter: a request not answered by then (its cluster stayed
	// away) is answered with a refusal.
	giveUpAfter = 5 * time.Minute
	// keepAfterExpiry: an answered request stays this long after its
	// certificate ended (a record of who got what), then goes.
	keepAfterExpiry = time.Hour
	signWait        = time.Minute
)

// Reconciler answers KubeconfigRequests.
type Reconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// Clients makes a client of a cluster from its kubeconfig (tests
	// give a fake); nil: a real one.
	Clients func(kubeconfig []byte) (kubernetes.Interface, error)
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("kubeconfigrequest").For(&lotsev1.KubeconfigRequest{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile answers one request.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	kr := &lotsev1.KubeconfigRequest{}
	if err := r.Client.Get(ctx, req.NamespacedName, kr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if kr.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	if cond := meta.FindStatusCondition(kr.Status.Conditions, lotsev1.ConditionIssued); cond != nil && (cond.Status == metav1.ConditionTrue || cond.Reason == "GaveUp" || cond.Reason == "Refused") {
		// Answered: kept for the record, then removed.
		end := cond.LastTransitionTime.Time
		if kr.Status.ExpirationTimestamp != nil {
			end = kr.Status.ExpirationTimestamp.Time
		}
		if wait := end.Add(keepAfterExpiry).Sub(r.now()); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
		return ctrl.Result{}, client.IgnoreNotFound(r.Client.Delete(ctx, kr))
	}

	before := kr.DeepCopy()
	pending := func(reason, format string, args ...any) (ctrl.Result, error) {
		msg := fmt.Sprintf(format, args...)
		if r.now().Sub(kr.CreationTimestamp.Time) > giveUpAfter {
			reason, msg = "GaveUp", "no certificate after "+giveUpAfter.String()+": "+msg
		}
		meta.SetStatusCondition(&kr.Status.Conditions, metav1.Condition{Type: lotsev1.ConditionIssued, Status: metav1.ConditionFalse,
			Reason: reason, Message: msg, ObservedGeneration: kr.Generation})
		if err := patch.Status(ctx, r.Client, kr, before); err != nil {
			return ctrl.Result{}, err
		}
		if reason == "GaveUp" {
			r.event(kr, corev1.EventTypeWarning, "KubeconfigRefused", msg)
			return ctrl.Result{RequeueAfter: keepAfterExpiry}, nil
		}
		return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
	}
	refuse := func(err error) (ctrl.Result, error) {
		meta.SetStatusCondition(&kr.Status.Conditions, metav1.Condition{Type: lotsev1.ConditionIssued, Status: metav1.ConditionFalse,
			Reason: "Refused", Message: err.Error(), ObservedGeneration: kr.Generation})
		r.event(kr, corev1.EventTypeWarning, "KubeconfigRefused", err.Error())
		if err := patch.Status(ctx, r.Client, kr, before); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{RequeueAfter: keepAfterExpiry}, nil
	}

	cluster := &lotsev1.Cluster{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: kr.Namespace, Name: kr.Spec.Cluster}, cluster); err != nil {
		if apierrors.IsNotFound(err) {
			return pending("ClusterNotFound", "there is no cluster %s in namespace %s", kr.Spec.Cluster, kr.Namespace)
		}
		return ctrl.Result{}, err
	}
	if !meta.IsStatusConditionTrue(cluster.Status.Conditions, lotsev1.ConditionAPIServerAvailable) || cluster.Status.KubeconfigSecret == "" {
		return pending("ClusterNotReady", "cluster %s does not answer yet (phase %s); the certificate is signed once it does", cluster.Name, cluster.Status.Phase)
	}
	secret := &corev1.Secret{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: kr.Namespace, Name: clustercontroller.KubeconfigSecretName(cluster.Name)}, secret); err != nil {
		return pending("ClusterNotReady", "cluster %s has no kubeconfig yet: %v", cluster.Name, err)
	}
	if !clustercontroller.IsClusterKubeconfig(secret, cluster.Name) {
		return pending("ClusterNotReady", "the kubeconfig Secret of cluster %s is not Lotse's (Lotse replaces it)", cluster.Name)
	}
	adminKubeconfig := secret.Data["kubeconfig"]
	cfg, err := untrustedkubeconfig.ParseUntrusted(adminKubeconfig)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("the kubeconfig of cluster %s: %w", cluster.Name, err)
	}
	// A tenant's cluster must not hold a worker for long (its webhooks
	// could slow every call): each call and the whole signing are bounded.
	cfg.Timeout = 15 * time.Second
	var admin kubernetes.Interface
	if r.Clients != nil {
		admin, err = r.Clients(adminKubeconfig)
	} else {
		admin, err = kubernetes.NewForConfig(cfg)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	group := userkubeconfig.ViewerGroup
	if kr.Spec.Role == lotsev1.KubeconfigAdmin {
		group = userkubeconfig.AdminGroup
	}
	signCtx, cancel := context.WithTimeout(ctx, signWait+30*time.Second)
	defer cancel()
	issued, err := userkubeconfig.Sign(signCtx, admin, []byte(kr.Spec.CertificateSigningRequest), userkubeconfig.Request{
		User: kr.Spec.User, Groups: []string{group}, TTL: time.Duration(kr.Spec.ExpirationSeconds) * time.Second,
	}, signWait)
	if err != nil {
		if ctx.Err() == nil && isRequestError(err) {
			return refuse(err)
		}
		return pending("SigningFailed", "%v", err)
	}
	kr.Status.Certificate = string(issued.Cert)
	kr.Status.Server = cfg.Host
	kr.Status.CertificateAuthority = string(cfg.CAData)
	kr.Status.ExpirationTimestamp = &metav1.Time{Time: issued.NotAfter}
	meta.SetStatusCondition(&kr.Status.Conditions, metav1.Condition{Type: lotsev1.ConditionIssued, Status: metav1.ConditionTrue,
		Reason: "Signed", ObservedGeneration: kr.Generation,
		Message: fmt.Sprintf("a %s certificate of cluster %s for %s, valid until %s", kr.Spec.Role, cluster.Name, kr.Spec.User, issued.NotAfter.UTC().Format(time.RFC3339))})
	if err := patch.Status(ctx, r.Client, kr, before); err != nil {
		return ctrl.Result{}, err
	}
	r.event(kr, corev1.EventTypeNormal, "KubeconfigIssued", fmt.Sprintf("%s certificate of cluster %s for %s until %s", kr.Spec.Role, cluster.Name, kr.Spec.User, issued.NotAfter.UTC().Format(time.RFC3339)))
	return ctrl.Result{RequeueAfter: time.Until(issued.NotAfter.Add(keepAfterExpiry))}, nil
}

// isRequestError: the request itself is wrong (its user, groups, lifetime
// or PEM), and asking again would not help.
func isRequestError(err error) bool {
	var re userkubeconfig.RequestError
	return errors.As(err, &re)
}

func (r *Reconciler) event(kr *lotsev1.KubeconfigRequest, eventType, reason, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(kr, nil, eventType, reason, "Sign", "%s", msg)
	}
}
