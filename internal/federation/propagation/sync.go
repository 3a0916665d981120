package propagation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
	"github.com/lotse/lotse/internal/federation/override"
	"github.com/lotse/lotse/internal/federation/placement"
)

// lookAgain is how soon a template waiting on members (a removal pending,
// a failed member's replacements not healthy yet) is looked at again, in
// case no member event comes first.
const lookAgain = 5 * time.Second

// result says when to look at a template again.
type result struct {
	// retry: an apply or removal failed; again with growing pauses.
	retry bool
	// after: look again then (a toleration ends, a removal is pending).
	after time.Duration
}

// decision is where a template goes.
type decision struct {
	policy   *workv1.PolicyReference
	conflict string
	replicas int32
	targets  map[string]int32 // member -> replicas (0 for kinds without)
	// duplicated: every target runs the full replica count.
	duplicated bool
	// requiredBy: the workloads this dependency follows.
	requiredBy []workv1.BindingSnapshot
	// propagateDeps: the workload's dependencies follow it.
	propagateDeps bool
	// recheck: a not-ready member's toleration ends then.
	recheck time.Duration
	message string // why the placement is as it is, when noteworthy
	err     error  // the placement failed (bad policy): reported, nothing moves
}

// sync brings one template's copies, binding and status to what the fleet
// says now.
func (e *Engine) sync(ctx context.Context, k key) (result, error) {
	kind, ok := e.kind(k.Kind)
	if !ok {
		return e.unknownKind(ctx, k)
	}
	if !e.kindSynced(kind) {
		return result{after: time.Second}, nil
	}
	tmpl := e.template(kind, k.Namespace, k.Name)
	members, err := e.Members.Members(ctx)
	if err != nil {
		return result{}, err
	}
	prev := e.binding(kind, k.Namespace, k.Name)
	d := e.decide(kind, tmpl, members, prev)
	if d.err != nil {
		e.event(tmpl, true, "PlacementFailed", "%v", d.err)
		return result{}, e.writeBinding(ctx, kind, k, tmpl, prev, d, nil)
	}

	var items []workv1.AggregatedStatusItem
	copies := map[string]*unstructured.Unstructured{}
	allApplied, allHealthy, failed, pending := true, true, false, false
	// First the members that carry the template: the applies run in
	// parallel (a change reaches every member in one round trip)...
	type outcome struct {
		obj *unstructured.Unstructured
		err error
	}
	applied := map[string]outcome{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range members {
		replicas, target := d.targets[m.Name]
		if !target || !m.Ready {
			continue
		}
		wg.Add(1)
		go func(m Member, replicas int32) {
			defer wg.Done()
			obj, err := e.applyCopy(ctx, m, kind, tmpl, replicas, d.conflict)
			mu.Lock()
			applied[m.Name] = outcome{obj, err}
			mu.Unlock()
		}(m, replicas)
	}
	wg.Wait()
	for _, m := range members {
		_, target := d.targets[m.Name]
		if !target {
			continue
		}
		item := workv1.AggregatedStatusItem{ClusterName: m.Name, Health: workv1.HealthUnknown}
		if !m.Ready {
			// Tolerated while not ready: it keeps its share (and what it
			// runs) until the toleration ends.
			item.Applied = hadCopy(prev, m.Name)
			item.AppliedMessage = "member not ready; its share moves when the placement's toleration ends"
			allApplied, allHealthy = false, false
			items = append(items, item)
			continue
		}
		obj, err := applied[m.Name].obj, applied[m.Name].err
		if err != nil {
			item.AppliedMessage = err.Error()
			allApplied, allHealthy, failed = false, false, true
			e.event(tmpl, true, "ApplyFailed", "member %s: %v", m.Name, err)
		} else {
			item.Applied = true
			item.Health = health(kind.ID(), obj)
			allHealthy = allHealthy && item.Health == workv1.HealthHealthy
			if st, ok := obj.Object["status"]; ok {
				if raw, err := json.Marshal(st); err == nil {
					item.Status = &runtime.RawExtension{Raw: raw}
				}
			}
			copies[m.Name] = obj
		}
		items = append(items, item)
	}
	// ...then those that should not carry it any more. Their copies go
	// only when they answer (nothing is deleted from a member that is
	// merely unreachable), and the copies of a member that failed go only
	// once the members that took over its share run healthy copies.
	for _, m := range members {
		if _, target := d.targets[m.Name]; target {
			continue
		}
		keep := ""
		switch {
		case !m.Reachable:
			keep = "member unreachable; its copy is removed when it answers again"
		case !m.Ready && tmpl != nil && hadCopy(prev, m.Name) && !(allHealthy && len(copies) > 0 && len(copies) == len(d.targets)):
			keep = "member failed; its copy is removed once the members that took over its share are healthy"
		}
		if keep != "" {
			pending = pending || m.Reachable
			if hadCopy(prev, m.Name) {
				// Applied: it still carries a copy, which keeps it on record
				// until the copy is gone.
				items = append(items, workv1.AggregatedStatusItem{ClusterName: m.Name, Applied: true, AppliedMessage: keep, Health: workv1.HealthUnknown})
			}
			continue
		}
		if kind.Custom && prev != nil && !hadCopy(prev, m.Name) {
			// A custom copy is read live, not from a watch: a member the
			// binding never gave this template is not asked each time.
			continue
		}
		if err := e.removeCopy(ctx, m, kind, k); err != nil {
			items = append(items, workv1.AggregatedStatusItem{ClusterName: m.Name, Applied: true, AppliedMessage: "removing the copy: " + err.Error(), Health: workv1.HealthUnknown})
			allApplied, failed = false, true
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].ClusterName < items[j].ClusterName })

	if tmpl == nil {
		// The template is gone: the binding goes once no member carries a
		// copy any more.
		if len(items) == 0 {
			return result{}, e.deleteBinding(ctx, kind, k)
		}
		return result{retry: failed, after: lookAgain}, e.writeBinding(ctx, kind, k, nil, prev, d, items)
	}
	if err := e.writeBinding(ctx, kind, k, tmpl, prev, d, items); err != nil {
		return result{}, err
	}
	if err := e.writeTemplateStatus(ctx, kind, tmpl, d, copies, allApplied && len(copies) == len(d.targets)); err != nil {
		return result{}, err
	}
	res := result{retry: failed, after: d.recheck}
	if pending && (res.after == 0 || res.after > lookAgain) {
		res.after = lookAgain
	}
	return res, nil
}

// decide places a template.
func (e *Engine) decide(kind Kind, tmpl *unstructured.Unstructured, members []Member, prev *workv1.ResourceBinding) decision {
	d := decision{targets: map[string]int32{}, conflict: policyv1.ConflictAbort}
	if tmpl == nil || !tmpl.GetDeletionTimestamp().IsZero() || tmpl.GetLabels()[LabelPropagate] == "false" {
		return d
	}
	if kind.ID() == "Namespace" {
		if ownNamespace(tmpl.GetName()) {
			return d
		}
		for _, m := range members {
			if m.Ready || hadCopy(prev, m.Name) {
				d.targets[m.Name] = 0
			}
		}
		return d
	}
	if ns := tmpl.GetNamespace(); ns != "" && (ns != "default" && !e.namespacePropagates(ns)) || generated(kind.ID(), tmpl) {
		return d
	}
	ref, spec := e.matchPolicy(kind, tmpl)
	if slices.Contains(dependencyKinds, kind.ID()) {
		d.requiredBy = e.followed(kind, tmpl)
	}
	if spec == nil && len(d.requiredBy) > 0 {
		// A dependency goes where the workloads that refer to it go.
		var names []string
		for _, f := range d.requiredBy {
			names = append(names, f.Name)
			for _, c := range f.Clusters {
				d.targets[c.Name] = 0
			}
		}
		d.message = "follows " + strings.Join(names, ", ")
		return d
	}
	if spec == nil && prev != nil && prev.Spec.PolicyRef == nil && len(prev.Spec.RequiredBy) > 0 {
		// It went only as a dependency, and nothing refers to it any more.
		return d
	}
	if spec == nil {
		// No policy (any more): what was placed stays where it is, as in
		// Karmada; deleting the template removes it.
		if prev != nil {
			for _, t := range prev.Spec.Clusters {
				d.targets[t.Name] = t.Replicas
			}
			d.policy, d.conflict, d.replicas = prev.Spec.PolicyRef, prev.Spec.ConflictResolution, prev.Spec.Replicas
			d.propagateDeps = prev.Spec.PropagateDeps
			if rs := prev.Spec.Clusters; len(rs) > 1 && d.replicas > 0 {
				d.duplicated = true
				for _, c := range rs {
					d.duplicated = d.duplicated && c.Replicas == d.replicas
				}
			}
			d.message = "no policy selects the resource any more; it stays where it was placed"
		}
		return d
	}
	d.policy = ref
	d.propagateDeps = spec.PropagateDeps
	if spec.ConflictResolution != "" {
		d.conflict = spec.ConflictResolution
	}
	// Schedulable: ready members, and members that carry the resource and
	// are not ready for less than the placement tolerates.
	var candidates []placement.Member
	tolerated, forever := toleration(spec.Placement.ClusterTolerations)
	for _, m := range members {
		switch {
		case m.Ready:
		case !hadCopy(prev, m.Name):
			continue
		case forever:
		default:
			left := tolerated - e.now().Sub(m.NotReadySince)
			if left <= 0 {
				continue // failed over
			}
			if d.recheck == 0 || left < d.recheck {
				d.recheck = left
			}
		}
		candidates = append(candidates, m.Member)
	}
	selected, err := placement.Select(candidates, spec.Placement.ClusterAffinity)
	if err != nil {
		d.err = fmt.Errorf("policy %s: %w", ref.Name, err)
		return d
	}
	// How many replicas each member holds: those it runs now plus what
	// its room fits (for division by capacity and spread ranking).
	perPod := templatePodRequests(tmpl)
	for i := range selected {
		m := &selected[i]
		m.Holds = hadCopy(prev, m.Name)
		if est := placement.Estimate(m.Free, perPod); est >= 0 {
			m.Available = est + int64(prevShare(prev, m.Name))
		}
	}
	if selected, err = placement.Spread(selected, spec.Placement.SpreadConstraints); err != nil {
		d.err = fmt.Errorf("policy %s: %w", ref.Name, err)
		return d
	}
	if len(selected) == 0 {
		d.message = fmt.Sprintf("policy %s selects no member", ref.Name)
		for _, f := range d.requiredBy {
			for _, c := range f.Clusters {
				d.targets[c.Name] = 0
			}
		}
		return d
	}
	if !kind.Replicas {
		for _, m := range selected {
			d.targets[m.Name] = 0
		}
		for _, f := range d.requiredBy {
			for _, c := range f.Clusters {
				d.targets[c.Name] = 0
			}
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
	rs := spec.Placement.ReplicaScheduling
	d.duplicated = rs == nil || rs.ReplicaSchedulingType == policyv1.ReplicaSchedulingDuplicated
	if d.replicas == 0 { // nothing to divide: every selected member carries a scaled-down copy
		for _, m := range selected {
			d.targets[m.Name] = 0
		}
	}
	return d
}

// toleration is how long a placement stays on a member that is not ready:
// the tolerations' for the not-ready taint (NoExecute), or the default.
func toleration(tolerations []corev1.Toleration) (time.Duration, bool) {
	for _, t := range tolerations {
		keyMatches := t.Key == policyv1.TaintMemberNotReady || (t.Key == "" && t.Operator == corev1.TolerationOpExists)
		effectMatches := t.Effect == "" || t.Effect == corev1.TaintEffectNoExecute
		valueMatches := t.Operator == corev1.TolerationOpExists || t.Value == ""
		if keyMatches && effectMatches && valueMatches {
			if t.TolerationSeconds == nil {
				return 0, true
			}
			return time.Duration(*t.TolerationSeconds) * time.Second, false
		}
	}
	return policyv1.DefaultTolerationSeconds * time.Second, false
}

// namespacePropagates reports whether a namespace of the fleet goes to the
// members: not one of each cluster's own, not marked to stay.
func (e *Engine) namespacePropagates(name string) bool {
	if ownNamespace(name) {
		return false
	}
	nsKind, _ := kindByName("Namespace")
	if ns := e.template(nsKind, "", name); ns != nil && ns.GetLabels()[LabelPropagate] == "false" {
		return false
	}
	return true
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
		if !kind.served(s.APIVersion) || s.Kind != kind.Kind {
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
	switch kind.ID() {
	case "Service":
		// The member assigns its own cluster IPs and node ports; a headless
		// Service stays headless.
		if ip, _, _ := unstructured.NestedString(obj.Object, "spec", "clusterIP"); ip != "None" {
			unstructured.RemoveNestedField(obj.Object, "spec", "clusterIP")
			unstructured.RemoveNestedField(obj.Object, "spec", "clusterIPs")
		}
		unstructured.RemoveNestedField(obj.Object, "spec", "healthCheckNodePort")
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
	ann := obj.GetAnnotations()
	delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
	delete(ann, "deployment.kubernetes.io/revision")
	obj.SetAnnotations(ann)
	e.mark(obj, tmpl)
	return obj
}

// mark puts the fleet's label and annotations on a copy.
func (e *Engine) mark(obj, tmpl *unstructured.Unstructured) {
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
	ann[AnnotationFleet] = e.Fleet
	ann[AnnotationTemplate] = tmpl.GetNamespace() + "/" + tmpl.GetName()
	obj.SetAnnotations(ann)
}

// applyCopy applies the template's copy in a member; an object there that
// the fleet did not make is left alone unless the policy says Overwrite.
func (e *Engine) applyCopy(ctx context.Context, m Member, kind Kind, tmpl *unstructured.Unstructured, replicas int32, conflict string) (*unstructured.Unstructured, error) {
	if !e.startApply(m.Name) {
		return nil, fmt.Errorf("the member is leaving the fleet")
	}
	defer e.endApply(m.Name)
	if m.Pull {
		return e.applyWork(ctx, m, kind, tmpl, replicas, conflict)
	}
	c, err := e.conn(m)
	if err != nil {
		return nil, err
	}
	res := c.client.Resource(kind.GVR).Namespace(tmpl.GetNamespace())
	var cached *unstructured.Unstructured
	if kind.Custom {
		if cached, err = e.liveCopy(ctx, c.client, kind, tmpl.GetNamespace(), tmpl.GetName()); err != nil {
			return nil, explainApply(kind, tmpl, err)
		}
	} else {
		cached = e.copyOf(c, kind, tmpl.GetNamespace(), tmpl.GetName())
	}
	if cached == nil && conflict != policyv1.ConflictOverwrite {
		cur, err := res.Get(ctx, tmpl.GetName(), metav1.GetOptions{})
		switch {
		case err == nil && cur.GetAnnotations()[AnnotationFleet] != e.Fleet:
			return nil, ConflictError(kind.Kind, tmpl.GetName())
		case err != nil && !apierrors.IsNotFound(err):
			return nil, err
		}
	}
	obj := e.memberCopy(kind, tmpl, replicas)
	overriders, err := e.overridesFor(kind, tmpl, m.Member)
	if err != nil {
		return nil, err
	}
	if err := override.Apply(obj, overriders); err != nil {
		return nil, err
	}
	e.mark(obj, tmpl) // overrides may not take the fleet's marks away
	// A copy that already is what the fleet would apply (same digest, and
	// no one changed its spec since: same generation) needs no request.
	digest, err := digestOf(obj)
	if err != nil {
		return nil, err
	}
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationDigest] = digest
	obj.SetAnnotations(ann)
	appliedKey := m.Name + "/" + kind.ID() + "/" + tmpl.GetNamespace() + "/" + tmpl.GetName()
	if cached != nil && cached.GetAnnotations()[AnnotationDigest] == digest && e.appliedVersion(appliedKey) == versionOf(cached) {
		return cached, nil
	}
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	out, err := res.Apply(ctx, tmpl.GetName(), obj, opts)
	defer func() {
		if err == nil && out != nil {
			e.recordApplied(appliedKey, versionOf(out))
		}
	}()
	if err != nil && kind.Namespaced && apierrors.IsNotFound(err) && e.namespacePropagates(tmpl.GetNamespace()) {
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
	if err != nil {
		err = explainApply(kind, tmpl, err)
	}
	return out, err
}

// explainApply says what to do about a refused or unknown custom kind.
func explainApply(kind Kind, tmpl *unstructured.Unstructured, err error) error {
	switch {
	case (kind.Custom || kind.GVR == crdGVR) && apierrors.IsForbidden(err):
		return fmt.Errorf("the fleet's credentials in the member may not change %s %s (a member's own identity may change the fleet's CRDs, and the objects of their kinds, "+
			"that the fleet held when it joined: unjoin it and join it again): %w", kind.Kind, tmpl.GetName(), err)
	case kind.Custom && apierrors.IsNotFound(err):
		return fmt.Errorf("the member does not serve %s %s yet: the fleet's CustomResourceDefinition %s.%s goes there first (a policy must select it too): %w",
			kind.GVR.GroupVersion(), kind.Kind, kind.GVR.Resource, kind.GVR.Group, err)
	}
	return err
}

// digestOf is a digest of the object a member gets.
func digestOf(obj *unstructured.Unstructured) (string, error) {
	data, err := json.Marshal(obj.Object)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:12]), nil
}

// versionOf says whether a copy changed since the engine applied it: its
// generation for kinds that have one (status updates do not change it),
// else its resourceVersion (a ConfigMap's data edited in the member).
func versionOf(obj *unstructured.Unstructured) string {
	if g := obj.GetGeneration(); g > 0 {
		return fmt.Sprintf("g%d", g)
	}
	return "rv" + obj.GetResourceVersion()
}

// appliedVersion is versionOf a member's copy right after the engine last
// applied it ("" when not applied since the engine started).
func (e *Engine) appliedVersion(key string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.applied[key]
}

func (e *Engine) recordApplied(key, version string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.applied == nil {
		e.applied = map[string]string{}
	}
	e.applied[key] = version
}

// removeCopy deletes a member's copy of a template, if the fleet made it.
func (e *Engine) removeCopy(ctx context.Context, m Member, kind Kind, k key) error {
	if m.Pull {
		return e.removeWork(ctx, m, kind, k)
	}
	c, err := e.conn(m)
	if err != nil {
		return err
	}
	cp, err := e.memberCopyOf(ctx, c, kind, k.Namespace, k.Name)
	if err != nil || cp == nil {
		return err
	}
	e.mu.Lock()
	delete(e.applied, m.Name+"/"+kind.ID()+"/"+k.Namespace+"/"+k.Name)
	e.mu.Unlock()
	return DeleteCopy(ctx, m.Config, c.client, kind.GVR, e.Fleet, e.Name, cp)
}

// writeTemplateStatus puts the members' aggregated status into the
// template, so that `kubectl get` and `kubectl rollout status` against the
// fleet tell the truth.
func (e *Engine) writeTemplateStatus(ctx context.Context, kind Kind, tmpl *unstructured.Unstructured, d decision, copies map[string]*unstructured.Unstructured, current bool) error {
	status, ok := aggregate(tmpl, kind.ID(), copies, current, d.duplicated)
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

// prevShare is the replicas a binding gave a member.
func prevShare(b *workv1.ResourceBinding, member string) int32 {
	if b == nil {
		return 0
	}
	for _, t := range b.Spec.Clusters {
		if t.Name == member {
			return t.Replicas
		}
	}
	return 0
}

// templatePodRequests is what one pod of a workload template requests;
// empty for a kind without a pod template.
func templatePodRequests(tmpl *unstructured.Unstructured) corev1.ResourceList {
	raw, found, _ := unstructured.NestedMap(tmpl.Object, "spec", "template", "spec")
	if !found {
		return nil
	}
	spec := &corev1.PodSpec{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, spec); err != nil {
		return nil
	}
	return placement.PodRequests(spec)
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
