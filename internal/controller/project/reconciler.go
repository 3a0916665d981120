// Package project reconciles Projects: a namespace per project, role
// bindings that give its members their roles there and on the Project
// itself, and the usage its status reports against the quota. Quotas are
// enforced at admission (internal/quota); roles and the rule that only the
// provider changes quotas are installed once by Install.
package project

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controller/patch"
	"github.com/lotse/lotse/internal/quota"
)

// Reconciler reconciles Projects.
type Reconciler struct {
	Client client.Client
	// Reader reads without a cache (the manager's API reader): a deleted
	// project lets go only when the API itself shows no cluster left.
	Reader   client.Reader
	Recorder events.EventRecorder
}

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr manager.Manager) error {
	toProject := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		name, ok := strings.CutPrefix(o.GetNamespace(), lotsev1.ProjectNamespacePrefix)
		if !ok {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: name}}}
	})
	return builder.ControllerManagedBy(mgr).Named("project").For(&lotsev1.Project{}).
		Owns(&corev1.Namespace{}).
		Owns(&rbacv1.ClusterRole{}).
		Owns(&rbacv1.ClusterRoleBinding{}).
		Watches(&rbacv1.RoleBinding{}, toProject).
		Watches(&lotsev1.Cluster{}, toProject).
		Complete(r)
}

// Reconcile brings one Project to what its spec says.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	p := &lotsev1.Project{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	before := p.DeepCopy()
	p.Status.Namespace = quota.Namespace(p)
	clusters := &lotsev1.ClusterList{}
	if err := r.Client.List(ctx, clusters, client.InNamespace(p.Status.Namespace)); err != nil {
		return reconcile.Result{}, err
	}
	p.Status.Usage = quota.Usage(clusters.Items)

	if p.DeletionTimestamp != nil {
		reader := r.Reader
		if reader == nil {
			reader = r.Client
		}
		live := &lotsev1.ClusterList{}
		if err := reader.List(ctx, live, client.InNamespace(p.Status.Namespace)); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, r.finish(ctx, p, before, live.Items)
	}
	if !controllerutil.ContainsFinalizer(p, lotsev1.ProjectFinalizer) {
		controllerutil.AddFinalizer(p, lotsev1.ProjectFinalizer)
		if err := r.Client.Update(ctx, p); err != nil {
			return reconcile.Result{}, err
		}
		before = p.DeepCopy()
		p.Status.Namespace = quota.Namespace(p)
		p.Status.Usage = quota.Usage(clusters.Items)
	}

	ready, reason, message := metav1.ConditionTrue, "Reconciled", fmt.Sprintf("namespace %s and the members' roles are in place", p.Status.Namespace)
	var result reconcile.Result
	ensureErr := r.ensure(ctx, p)
	if ensureErr != nil {
		var taken *namespaceTakenError
		if asNamespaceTaken(ensureErr, &taken) {
			// The namespace is not ours, so no event of it reaches us:
			// look again later.
			ready, reason, message = metav1.ConditionFalse, "NamespaceTaken", taken.Error()
			result.RequeueAfter = 30 * time.Second
			ensureErr = nil
		} else {
			r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, "ReconcileFailed", "Reconcile", "%v", ensureErr)
			ready, reason, message = metav1.ConditionFalse, "ReconcileFailed", ensureErr.Error()
		}
	}
	meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{
		Type: lotsev1.ConditionProjectReady, Status: ready, Reason: reason, Message: message, ObservedGeneration: p.Generation,
	})
	if excess := quota.Excess(p.Spec.Quota, p.Status.Usage); len(excess) > 0 {
		meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{
			Type: lotsev1.ConditionQuotaExceeded, Status: metav1.ConditionTrue, Reason: "AboveQuota", ObservedGeneration: p.Generation,
			Message: "the project uses more than its quota allows (" + strings.Join(excess, ", ") + "); nothing that would use more is admitted until it shrinks or the quota grows",
		})
	} else {
		meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{
			Type: lotsev1.ConditionQuotaExceeded, Status: metav1.ConditionFalse, Reason: "WithinQuota", ObservedGeneration: p.Generation,
			Message: "the project's clusters fit its quota",
		})
	}
	p.Status.ObservedGeneration = p.Generation
	if !equality.Semantic.DeepEqual(before.Status, p.Status) {
		if err := patch.Status(ctx, r.Client, p, before); err != nil {
			return reconcile.Result{}, err
		}
	}
	return result, ensureErr
}

// finish lets a deleted project go once no cluster is left in its
// namespace; the namespace and the project's cluster-wide roles follow by
// garbage collection (their owner is the project). The admission webhook
// refuses such deletes; this holds when the webhook was not there.
func (r *Reconciler) finish(ctx context.Context, p, before *lotsev1.Project, clusters []lotsev1.Cluster) error {
	if len(clusters) > 0 {
		names := make([]string, 0, len(clusters))
		for _, c := range clusters {
			names = append(names, c.Name)
		}
		meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{
			Type: lotsev1.ConditionProjectReady, Status: metav1.ConditionFalse, Reason: "Deleting", ObservedGeneration: p.Generation,
			Message: fmt.Sprintf("waiting until the project's clusters are deleted: %s (delete them with `lotse cluster delete -n %s NAME`)", strings.Join(names, ", "), p.Status.Namespace),
		})
		return patch.Status(ctx, r.Client, p, before)
	}
	if controllerutil.RemoveFinalizer(p, lotsev1.ProjectFinalizer) {
		return client.IgnoreNotFound(r.Client.Update(ctx, p))
	}
	return nil
}

type namespaceTakenError struct{ namespace, project string }

func (e *namespaceTakenError) Error() string {
	return fmt.Sprintf("namespace %s exists and does not belong to project %s: delete or rename it, or give the project another name", e.namespace, e.project)
}

func asNamespaceTaken(err error, target **namespaceTakenError) bool {
	t, ok := err.(*namespaceTakenError)
	if ok {
		*target = t
	}
	return ok
}

// ensure writes the namespace, the role bindings in it, and the project's
// own cluster roles, each only where it differs from what it should be.
func (r *Reconciler) ensure(ctx context.Context, p *lotsev1.Project) error {
	nsName := quota.Namespace(p)
	ns := &corev1.Namespace{}
	err := r.Client.Get(ctx, client.ObjectKey{Name: nsName}, ns)
	switch {
	case apierrors.IsNotFound(err):
		ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName, Labels: map[string]string{lotsev1.LabelProject: p.Name}}}
		if err := controllerutil.SetControllerReference(p, ns, r.Client.Scheme()); err != nil {
			return err
		}
		if err := r.Client.Create(ctx, ns); err != nil {
			return fmt.Errorf("create namespace %s: %w", nsName, err)
		}
		r.Recorder.Eventf(p, nil, corev1.EventTypeNormal, "NamespaceCreated", "Reconcile", "created namespace %s for the project's clusters", nsName)
	case err != nil:
		return err
	default:
		if !metav1.IsControlledBy(ns, p) {
			return &namespaceTakenError{namespace: nsName, project: p.Name}
		}
		if ns.Labels[lotsev1.LabelProject] != p.Name {
			orig := ns.DeepCopy()
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			ns.Labels[lotsev1.LabelProject] = p.Name
			if err := r.Client.Patch(ctx, ns, client.MergeFrom(orig)); err != nil {
				return err
			}
		}
	}

	for _, role := range []lotsev1.ProjectRole{lotsev1.RoleOwner, lotsev1.RoleAdmin, lotsev1.RoleViewer} {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: nsName, Name: RoleName(role)},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: RoleName(role)},
			Subjects:   subjects(p, role),
		}
		if err := r.apply(ctx, p, rb, &rbacv1.RoleBinding{}); err != nil {
			return err
		}
	}

	// On the Project itself: every member may read it, owners may change
	// it (its members; the quota is the provider's, see Install).
	for _, level := range []struct {
		suffix string
		verbs  []string
		roles  []lotsev1.ProjectRole
	}{
		{"member", []string{"get", "watch"}, []lotsev1.ProjectRole{lotsev1.RoleOwner, lotsev1.RoleAdmin, lotsev1.RoleViewer}},
		{"owner", []string{"get", "watch", "update", "patch"}, []lotsev1.ProjectRole{lotsev1.RoleOwner}},
	} {
		name := fmt.Sprintf("lotse:project:%s:%s", p.Name, level.suffix)
		cr := &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Rules: []rbacv1.PolicyRule{{
				APIGroups: []string{lotsev1.GroupVersion.Group}, Resources: []string{"projects"},
				ResourceNames: []string{p.Name}, Verbs: level.verbs,
			}},
		}
		if err := r.apply(ctx, p, cr, &rbacv1.ClusterRole{}); err != nil {
			return err
		}
		var subs []rbacv1.Subject
		for _, role := range level.roles {
			subs = append(subs, subjects(p, role)...)
		}
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
			Subjects:   subs,
		}
		if err := r.apply(ctx, p, crb, &rbacv1.ClusterRoleBinding{}); err != nil {
			return err
		}
	}
	return nil
}

// apply creates want, or updates the existing object when its rules,
// subjects or role differ (a binding's role cannot change: it is
// recreated then).
func (r *Reconciler) apply(ctx context.Context, p *lotsev1.Project, want, existing client.Object) error {
	if err := controllerutil.SetControllerReference(p, want, r.Client.Scheme()); err != nil {
		return err
	}
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(want), existing)
	if apierrors.IsNotFound(err) {
		return r.Client.Create(ctx, want)
	}
	if err != nil {
		return err
	}
	if !metav1.IsControlledBy(existing, p) && existing.GetNamespace() == "" {
		return fmt.Errorf("%s %s exists and does not belong to project %s; delete it so the project can use the name", kindOf(want), want.GetName(), p.Name)
	}
	switch w := want.(type) {
	case *rbacv1.RoleBinding:
		e := existing.(*rbacv1.RoleBinding)
		if e.RoleRef != w.RoleRef {
			if err := r.Client.Delete(ctx, e); client.IgnoreNotFound(err) != nil {
				return err
			}
			return r.Client.Create(ctx, w)
		}
		if reflect.DeepEqual(e.Subjects, w.Subjects) && metav1.IsControlledBy(e, p) {
			return nil
		}
		e.Subjects, e.OwnerReferences = w.Subjects, w.OwnerReferences
		return r.Client.Update(ctx, e)
	case *rbacv1.ClusterRoleBinding:
		e := existing.(*rbacv1.ClusterRoleBinding)
		if e.RoleRef != w.RoleRef {
			if err := r.Client.Delete(ctx, e); client.IgnoreNotFound(err) != nil {
				return err
			}
			return r.Client.Create(ctx, w)
		}
		if reflect.DeepEqual(e.Subjects, w.Subjects) {
			return nil
		}
		e.Subjects = w.Subjects
		return r.Client.Update(ctx, e)
	case *rbacv1.ClusterRole:
		e := existing.(*rbacv1.ClusterRole)
		if reflect.DeepEqual(e.Rules, w.Rules) {
			return nil
		}
		e.Rules = w.Rules
		return r.Client.Update(ctx, e)
	}
	return fmt.Errorf("apply: unexpected %T", want)
}

func kindOf(o client.Object) string {
	return strings.TrimPrefix(fmt.Sprintf("%T", o), "*v1.")
}

// subjects are the project's members with a role, as RBAC subjects.
func subjects(p *lotsev1.Project, role lotsev1.ProjectRole) []rbacv1.Subject {
	var out []rbacv1.Subject
	for _, m := range p.Spec.Members {
		if m.Role != role {
			continue
		}
		switch m.Kind {
		case "Group":
			out = append(out, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: m.Name})
		case "ServiceAccount":
			ns, name, _ := strings.Cut(m.Name, ":")
			out = append(out, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name})
		default:
			out = append(out, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: m.Name})
		}
	}
	return out
}
