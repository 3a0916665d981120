package propagation

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
	"github.com/lotse/lotse/internal/federation/placement"
)

// retryNotApplied is how soon a template whose copies are not all applied
// is looked at again.
const retryNotApplied = 5 * time.Second

// decision is where a template goes.
type decision struct {
	policy   *workv1.PolicyReference
	conflict string
	replicas int32
	targets  map[string]int32 // member -> replicas (0 for kinds without)
	message  string           // why the placement is as it is, when noteworthy
	err      error            // the placement failed (bad policy): reported, nothing moves
}

// sync brings one template's copies, binding and status to what the fleet
// says now.
func (e *Engine) sync(ctx context.Context, k key) (time.Duration, error) {
	kind, ok := kindByName(k.Kind)
	if !ok {
		return 0, nil
	}
	tmpl := e.template(kind, k.Namespace, k.Name)
	members, err := e.Members.Members(ctx)
	if err != nil {
		return 0, err
	}
	prev := e.binding(kind, k.Namespace, k.Name)
	d := e.decide(kind, tmpl, members, prev)
	if d.err != nil {
		e.event(tmpl, true, "PlacementFailed", "%v", d.err)
		return 0, e.writeBinding(ctx, kind, k, tmpl, prev, d, nil)
	}

	var items []workv1.AggregatedStatusItem
	copies := map[string]*unstructured.Unstructured{}
	allApplied := true
	for _, m := range members {
		replicas, target := d.targets[m.Name]
		if !target {
			// Remove a copy from a member that should not carry it, but
			// only when the member answers: an unreachable member's copy
			// stays until it is back (nothing is deleted on a guess).
			if !m.Ready {
				if hadCopy(prev, m.Name) {
					items = append(items, workv1.AggregatedStatusItem{ClusterName: m.Name, AppliedMessage: "member not ready; its copy is removed when it answers again", Health: workv1.HealthUnknown})
				}
				continue
			}
			if err := e.removeCopy(ctx, m, kind, k); err != nil {
				items = append(items, workv1.AggregatedStatusItem{ClusterName: m.Name, AppliedMessage: "removing the copy: " + err.Error(), Health: workv1.HealthUnknown})
				allApplied = false
			}
			continue
		}
		item := workv1.AggregatedStatusItem{ClusterName: m.Name, Health: workv1.HealthUnknown}
		if !m.Ready {
			item.AppliedMessage = "member not ready"
			allApplied = false
			items = append(items, item)
			continue
		}
		obj, err := e.applyCopy(ctx, m, kind, tmpl, replicas, d.conflict)
		if err != nil {
			item.AppliedMessage = err.Error()
			allApplied = false
			e.event(tmpl, true, "ApplyFailed", "member %s: %v", m.Name, err)
		} else {
			item.Applied = true
			item.Health = health(kind.Kind, obj)
			if st, ok := obj.Object["status"]; ok {
				if raw, err := json.Marshal(st); err == nil {
					item.Status = &runtime.RawExtension{Raw: raw}
				}
			}
			copies[m.Name] = obj
		}
		items = append(items, item)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].ClusterName < items[j].ClusterName })

	if tmpl == nil {
		// The template is gone: the binding goes once no member carries a
		// copy any more.
		if len(items) == 0 {
			return 0, e.deleteBinding(ctx, kind, k)
		}
		return retryNotApplied, e.writeBinding(ctx, kind, k, nil, prev, d, items)
	}
	if err := e.writeBinding(ctx, kind, k, tmpl, prev, d, items); err != nil {
		return 0, err
	}
	if err := e.writeTemplateStatus(ctx, kind, tmpl, copies, allApplied && len(copies) == len(d.targets)); err != nil {
		return 0, err
	}
	if !allApplied {
		return retryNotApplied, nil
	}
	return 0, nil
}

// decide places a template.
func (e *Engine) decide(kind Kind, tmpl *unstructured.Unstructured, members []Member, prev *workv1.ResourceBinding) decision {
	d := decision{targets: map[string]int32{}, conflict: policyv1.ConflictAbort}
	if tmpl == nil || !tmpl.GetDeletionTimestamp().IsZero() || tmpl.GetLabels()[LabelPropagate] == "false" {
		return d
	}
	if kind.Kind == "Namespace" {
		if systemNamespaces[tmpl.GetName()] || strings.HasPrefix(tmpl.GetName(), "kube-") {
			return d
		}
		for _, m := range members {
			if m.Ready || hadCopy(prev, m.Name) {
				d.targets[m.Name] = 0
			}
		}
		return d
	}
	if tmpl.GetNamespace() != "" && systemNamespaces[tmpl.GetNamespace()] {
		return d
	}
	ref, spec := e.matchPolicy(kind, tmpl)
	if spec == nil {
		// No policy (any more): what was placed stays where it is, as in
		// Karmada; deleting the template removes it.
		if prev != nil {
			for _, t := range prev.Spec.Clusters {
				d.targets[t.Name] = t.Replicas
			}
			d.policy, d.conflict, d.replicas = prev.Spec.PolicyRef, prev.Spec.ConflictResolution, prev.Spec.Replicas
			d.message = "no policy selects the resource any more; it stays where it was placed"
		}
		return d
	}
	d.policy = ref
	if spec.ConflictResolution != "" {
		d.conflict = spec.ConflictResolution
	}
	// Schedulable: ready members, and members that already carry the
	// resource (a member that stops answering keeps its share here).
	var candidates []placement.Member
	for _, m := range members {
		if m.Ready || hadCopy(prev, m.Name) {
			candidates = append(candidates, m.Member)
		}
	}
	selected, err := placement.Select(candidates, spec.Placement.ClusterAffinity)
	if err != nil {
		d.err = fmt.Errorf("policy %s: %w", ref.Name, err)
		return d
	}
	if len(selected) == 0 {
		d.message = fmt.Sprintf("policy %s selects no member", ref.Name)
		return d
	}
	if !kind.Replicas {
		for _, m := range selected {
			d.targets[m.Name] = 0
		}
		return d
	}
	replicas, found, _ := unstructured.NestedInt64(tmpl.Object, "spec", "replicas")
	if !found {
		replicas = 1
	}
	d.replicas = int32(replicas)
	shares, err := placement.Divide(d.replicas, selected, spec.Placement.ReplicaScheduling)
	if err != nil {
		d.err = fmt.Errorf("policy %s: %w", ref.Name, err)
		return d
	}
	d.targets = shares
	if d.replicas == 0 { // nothing to divide: every selected member carries a scaled-down copy
		for _, m := range selected {
			d.targets[m.Name] = 0
		}
	}
	return d
}

// matchPolicy finds the policy for a template: a PropagationPolicy of its
// namespace before a ClusterPropagationPolicy; within each, the highest
// priority, then the first name.
func (e *Engine) matchPolicy(kind Kind, tmpl *unstructured.Unstructured) (*workv1.PolicyReference, *policyv1.PropagationSpec) {
	namespaced, cluster := e.policies()
	type candidate struct {
		ref  workv1.PolicyReference
		spec policyv1.PropagationSpec
	}
	pick := func(cs []candidate) (*workv1.PolicyReference, *policyv1.PropagationSpec) {
		if len(cs) == 0 {
			return nil, nil
		}
		sort.Slice(cs, func(i, j int) bool {
			pi, pj := ptr.Deref(cs[i].spec.Priority, 0), ptr.Deref(cs[j].spec.Priority, 0)
			if pi != pj {
				return pi > pj
			}
			return cs[i].ref.Name < cs[j].ref.Name
		})
		return &cs[0].ref, &cs[0].spec
	}
	var own []candidate
	if tmpl.GetNamespace() != "" {
		for _, p := range namespaced {
			if p.Namespace == tmpl.GetNamespace() && selects(p.Spec.ResourceSelectors, kind, tmpl, p.Namespace) {
				own = append(own, candidate{workv1.PolicyReference{Kind: "PropagationPolicy", Namespace: p.Namespace, Name: p.Name}, p.Spec})
			}
		}
	}
	if ref, spec := pick(own); ref != nil {
		return ref, spec
	}
	var wide []candidate
	for _, p := range cluster {
		if selects(p.Spec.ResourceSelectors, kind, tmpl, "") {
			wide = append(wide, candidate{workv1.PolicyReference{Kind: "ClusterPropagationPolicy", Name: p.Name}, p.Spec})
		}
	}
	return pick(wide)
}

// selects reports whether any selector picks the template; a namespaced
// policy (policyNamespace set) selects only in its own namespace.
func selects(selectors []policyv1.ResourceSelector, kind Kind, tmpl *unstructured.Unstructured, policyNamespace string) bool {
	for _, s := range selectors {
		if s.APIVersion != kind.APIVersion() || s.Kind != kind.Kind {
			continue
		}
		ns := s.Namespace
		if policyNamespace != "" {
			ns = policyNamespace
		}
		if ns != "" && kind.Namespaced && ns != tmpl.GetNamespace() {
			continue
		}
		if s.Name != "" && s.Name != tmpl.GetName() {
			continue
		}
		if s.LabelSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(s.LabelSelector)
			if err != nil || !sel.Matches(labelSet(tmpl.GetLabels())) {
				continue
			}
		}
		return true
	}
	return false
}

// memberCopy is the object a member gets: the template without what the
// fleet's API server assigned, with the member's replicas and the marks
// that make it the fleet's.
func (e *Engine) memberCopy(kind Kind, tmpl *unstructured.Unstructured, replicas int32) *unstructured.Unstructured {
	obj := tmpl.DeepCopy()
	for _, f := range []string{"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "ownerReferences",
		"finalizers", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"} {
		unstructured.RemoveNestedField(obj.Object, "metadata", f)
	}
	delete(obj.Object, "status")
	switch kind.Kind {
	case "Service":
		// The member assigns its own cluster IPs and node ports.
		unstructured.RemoveNestedField(obj.Object, "spec", "clusterIP")
		unstructured.RemoveNestedField(obj.Object, "spec", "clusterIPs")
		if ports, ok, _ := unstructured.NestedSlice(obj.Object, "spec", "ports"); ok {
			for _, p := range ports {
				if pm, ok := p.(map[string]any); ok {
					delete(pm, "nodePort")
				}
			}
			_ = unstructured.SetNestedSlice(obj.Object, ports, "spec", "ports")
		}
	case "Job":
		// The fleet's API server generated selector and labels; the member
		// generates its own.
		unstructured.RemoveNestedField(obj.Object, "spec", "selector")
		for _, l := range []string{"controller-uid", "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name", "job-name"} {
			unstructured.RemoveNestedField(obj.Object, "spec", "template", "metadata", "labels", l)
		}
	case "ServiceAccount":
		delete(obj.Object, "secrets")
	}
	if kind.Replicas {
		_ = unstructured.SetNestedField(obj.Object, int64(replicas), "spec", "replicas")
	}
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[lotsev1.LabelFleet] = e.Name
	obj.SetLabels(labels)
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
	delete(ann, "deployment.kubernetes.io/revision")
	ann[AnnotationFleet] = e.Fleet
	ann[AnnotationTemplate] = tmpl.GetNamespace() + "/" + tmpl.GetName()
	obj.SetAnnotations(ann)
	return obj
}

// applyCopy applies the template's copy in a member; an object there that
// the fleet did not make is left alone unless the policy says Overwrite.
func (e *Engine) applyCopy(ctx context.Context, m Member, kind Kind, tmpl *unstructured.Unstructured, replicas int32, conflict string) (*unstructured.Unstructured, error) {
	c, err := e.conn(m)
	if err != nil {
		return nil, err
	}
	res := c.client.Resource(kind.GVR).Namespace(tmpl.GetNamespace())
	if e.copyOf(c, kind, tmpl.GetNamespace(), tmpl.GetName()) == nil && conflict != policyv1.ConflictOverwrite {
		cur, err := res.Get(ctx, tmpl.GetName(), metav1.GetOptions{})
		switch {
		case err == nil && cur.GetAnnotations()[AnnotationFleet] != e.Fleet:
			return nil, fmt.Errorf("%s %s already exists in the member and was not made by this fleet; the policy's conflictResolution: Overwrite takes it over", kind.Kind, tmpl.GetName())
		case err != nil && !apierrors.IsNotFound(err):
			return nil, err
		}
	}
	obj := e.memberCopy(kind, tmpl, replicas)
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	out, err := res.Apply(ctx, tmpl.GetName(), obj, opts)
	if err != nil && kind.Namespaced && apierrors.IsNotFound(err) {
		// The namespace is not there yet: bring it (its template, or a bare
		// one) and try again.
		nsKind, _ := kindByName("Namespace")
		ns := e.template(nsKind, "", tmpl.GetNamespace())
		if ns == nil {
			ns = &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": tmpl.GetNamespace()}}}
		}
		if _, nerr := c.client.Resource(nsKind.GVR).Apply(ctx, ns.GetName(), e.memberCopy(nsKind, ns, 0), opts); nerr != nil {
			return nil, nerr
		}
		out, err = res.Apply(ctx, tmpl.GetName(), obj, opts)
	}
	return out, err
}

// removeCopy deletes a member's copy of a template, if the fleet made it.
func (e *Engine) removeCopy(ctx context.Context, m Member, kind Kind, k key) error {
	c, err := e.conn(m)
	if err != nil {
		return err
	}
	if !c.synced() {
		return fmt.Errorf("member cache not synced yet")
	}
	cp := e.copyOf(c, kind, k.Namespace, k.Name)
	if cp == nil {
		return nil
	}
	uid := cp.GetUID()
	err = c.client.Resource(kind.GVR).Namespace(k.Namespace).Delete(ctx, k.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !isGone(err) {
		return err
	}
	return nil
}

// writeTemplateStatus puts the members' aggregated status into the
// template, so that `kubectl get` and `kubectl rollout status` against the
// fleet tell the truth.
func (e *Engine) writeTemplateStatus(ctx context.Context, kind Kind, tmpl *unstructured.Unstructured, copies map[string]*unstructured.Unstructured, current bool) error {
	status, ok := aggregate(tmpl, kind.Kind, copies, current)
	if !ok {
		return nil
	}
	old, _, _ := unstructured.NestedMap(tmpl.Object, "status")
	if equalJSON(old, status) {
		return nil
	}
	updated := tmpl.DeepCopy()
	updated.Object["status"] = status
	_, err := e.fleet.Resource(kind.GVR).Namespace(tmpl.GetNamespace()).UpdateStatus(ctx, updated, metav1.UpdateOptions{FieldManager: FieldManager})
	if apierrors.IsConflict(err) {
		return nil // a newer template is queued already
	}
	return err
}

func equalJSON(a, b map[string]any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func hadCopy(b *workv1.ResourceBinding, member string) bool {
	if b == nil {
		return false
	}
	for _, s := range b.Status.AggregatedStatus {
		if s.ClusterName == member && s.Applied {
			return true
		}
	}
	return slices.ContainsFunc(b.Spec.Clusters, func(t workv1.TargetCluster) bool { return t.Name == member })
}

func kindByName(name string) (Kind, bool) {
	for _, k := range Kinds {
		if k.Kind == name {
			return k, true
		}
	}
	return Kind{}, false
}

func isGone(err error) bool {
	return apierrors.IsNotFound(err) || apierrors.IsConflict(err) || apierrors.IsGone(err)
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}

type labelSet map[string]string

func (l labelSet) Has(k string) bool   { _, ok := l[k]; return ok }
func (l labelSet) Get(k string) string { return l[k] }
func (l labelSet) Lookup(k string) (string, bool) {
	v, ok := l[k]
	return v, ok
}
