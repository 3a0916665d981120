package quota

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// reservationTTL is how long an admitted cluster counts from its
// admission alone, before a list of the project's clusters shows it.
// Creates that a later admission step refuses count for this long too:
// erring on the side of the quota.
const reservationTTL = 30 * time.Second

// Admitter is the admission webhook of project quotas. It reads through
// Reader, which must not be a cache: a list that lags would let two
// creates in a row both fit. Admissions of one project are serialized, and
// what was just admitted is reserved until the API shows it, so concurrent
// creates cannot together go past a quota (within one manager: the webhook
// configuration points at the leader's).
type Admitter struct {
	Reader client.Reader
	Scheme *runtime.Scheme
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time

	mu       sync.Mutex // guards locks and reserved
	locks    map[string]*sync.Mutex
	reserved map[string]reservation
}

type reservation struct {
	cost  lotsev1.ProjectUsage
	until time.Time
}

// Clusters is the handler of Cluster creates and updates.
func (a *Admitter) Clusters() http.Handler {
	return &admission.Webhook{Handler: admission.HandlerFunc(a.admitCluster)}
}

// Projects is the handler of Project deletes.
func (a *Admitter) Projects() http.Handler {
	return &admission.Webhook{Handler: admission.HandlerFunc(a.admitProjectDelete)}
}

func (a *Admitter) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Admitter) admitCluster(ctx context.Context, req admission.Request) admission.Response {
	dec := admission.NewDecoder(a.Scheme)
	cluster := &lotsev1.Cluster{}
	if err := dec.DecodeRaw(req.Object, cluster); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	var before lotsev1.ProjectUsage
	if req.Operation == admissionv1.Update {
		old := &lotsev1.Cluster{}
		if err := dec.DecodeRaw(req.OldObject, old); err != nil {
			return admission.Errored(http.StatusBadRequest, err)
		}
		before = Cost(old)
	}
	after := Cost(cluster)
	// Most updates (finalizers, annotations, versions) change no cost:
	// they need no reads.
	if req.Operation == admissionv1.Update && after == before {
		return admission.Allowed("")
	}

	project, denial, err := a.projectOf(ctx, req.Namespace)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if denial != "" {
		if req.Operation == admissionv1.Create {
			return admission.Denied(denial)
		}
		return admission.Allowed("")
	}
	if project == nil || project.Spec.Quota == nil {
		return admission.Allowed("")
	}

	// A create with generateName has its name only in the object; one
	// without any (refused later) is told apart by the request's UID.
	name := cluster.Name
	if name == "" {
		name = string(req.UID)
	}
	dryRun := req.DryRun != nil && *req.DryRun
	if !dryRun {
		// Admissions of one project are serialized; a dry run reserves
		// nothing and need not wait.
		unlock := a.lock(req.Namespace)
		defer unlock()
	}
	list := &lotsev1.ClusterList{}
	if err := a.Reader.List(ctx, list, client.InNamespace(req.Namespace)); err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("list the clusters of project %s: %w", project.Name, err))
	}
	now := a.now()
	others, names := a.others(req.Namespace, name, list.Items, now)
	if reason := Decide(project, cluster.Name, before, after, others, names); reason != "" {
		return admission.Denied(reason)
	}
	if !dryRun {
		a.reserve(req.Namespace+"/"+name, reservation{cost: after, until: now.Add(reservationTTL)})
	}
	return admission.Allowed("")
}

// lock serializes the admissions of one namespace.
func (a *Admitter) lock(namespace string) func() {
	a.mu.Lock()
	if a.locks == nil {
		a.locks = map[string]*sync.Mutex{}
	}
	l := a.locks[namespace]
	if l == nil {
		l = &sync.Mutex{}
		a.locks[namespace] = l
	}
	a.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (a *Admitter) reserve(key string, r reservation) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.reserved == nil {
		a.reserved = map[string]reservation{}
	}
	a.reserved[key] = r
}

// others sums what the namespace's clusters other than name use: as
// listed, or as reserved by an admission newer than the list shows.
func (a *Admitter) others(namespace, name string, listed []lotsev1.Cluster, now time.Time) (lotsev1.ProjectUsage, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, r := range a.reserved {
		if !now.Before(r.until) {
			delete(a.reserved, k)
		}
	}
	var u lotsev1.ProjectUsage
	var names []string
	seen := map[string]bool{}
	for i := range listed {
		c := &listed[i]
		if c.Name == name {
			continue
		}
		seen[c.Name] = true
		names = append(names, c.Name)
		cost := Cost(c)
		if r, ok := a.reserved[namespace+"/"+c.Name]; ok {
			cost = maxUsage(cost, r.cost)
		}
		u = Add(u, cost)
	}
	prefix := namespace + "/"
	for k, r := range a.reserved {
		n, ok := strings.CutPrefix(k, prefix)
		if !ok || n == name || seen[n] {
			continue
		}
		names = append(names, n)
		u = Add(u, r.cost)
	}
	return u, names
}

func maxUsage(a, b lotsev1.ProjectUsage) lotsev1.ProjectUsage {
	return lotsev1.ProjectUsage{
		Clusters:             max(a.Clusters, b.Clusters),
		Nodes:                max(a.Nodes, b.Nodes),
		ControlPlaneReplicas: max(a.ControlPlaneReplicas, b.ControlPlaneReplicas),
	}
}

// projectOf finds the project that owns a namespace. A namespace without
// the project label has none (nil, "", nil). A labelled namespace whose
// project is gone or going gets a denial for creates.
func (a *Admitter) projectOf(ctx context.Context, namespace string) (*lotsev1.Project, string, error) {
	ns := &corev1.Namespace{}
	if err := a.Reader.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, "", nil
		}
		return nil, "", fmt.Errorf("read namespace %s: %w", namespace, err)
	}
	name := ns.Labels[lotsev1.LabelProject]
	if name == "" {
		return nil, "", nil
	}
	p := &lotsev1.Project{}
	if err := a.Reader.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Sprintf("namespace %s belongs to project %s, which no longer exists: no clusters can be created there", namespace, name), nil
		}
		return nil, "", fmt.Errorf("read project %s: %w", name, err)
	}
	if namespace != Namespace(p) {
		return nil, "", nil // a label set by hand on a namespace not the project's
	}
	if p.DeletionTimestamp != nil {
		return nil, fmt.Sprintf("project %s is being deleted: no clusters can be created in it", name), nil
	}
	return p, "", nil
}

func (a *Admitter) admitProjectDelete(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Delete {
		return admission.Allowed("")
	}
	p := &lotsev1.Project{}
	if err := admission.NewDecoder(a.Scheme).DecodeRaw(req.OldObject, p); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	names, err := ClustersOf(ctx, a.Reader, p)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if len(names) > 0 {
		return admission.Denied(fmt.Sprintf("project %s still has clusters (%s) in namespace %s: delete them first, e.g. `lotse cluster delete -n %s %s`",
			p.Name, strings.Join(names, ", "), Namespace(p), Namespace(p), names[0]))
	}
	return admission.Allowed("")
}

// Namespace is the namespace of a project.
func Namespace(p *lotsev1.Project) string {
	return lotsev1.ProjectNamespacePrefix + p.Name
}

// ClustersOf names the clusters in a project's namespace, sorted.
func ClustersOf(ctx context.Context, r client.Reader, p *lotsev1.Project) ([]string, error) {
	list := &lotsev1.ClusterList{}
	if err := r.List(ctx, list, client.InNamespace(Namespace(p))); err != nil {
		return nil, fmt.Errorf("list the clusters of project %s: %w", p.Name, err)
	}
	names := make([]string, 0, len(list.Items))
	for _, c := range list.Items {
		names = append(names, c.Name)
	}
	sort.Strings(names)
	return names, nil
}
