package propagation

import (
	"context"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
)

// BindingName is the name of a template's binding: its name and kind, as
// in Karmada; for a custom kind, the kind's ID (Kind.group), so that two
// kinds of one name in different groups do not share a binding.
func BindingName(name, kind string) string {
	return name + "-" + strings.ToLower(kind)
}

func bindingResource(kind Kind) schema.GroupVersionResource {
	if kind.Namespaced {
		return workv1.GroupVersion.WithResource("resourcebindings")
	}
	return workv1.GroupVersion.WithResource("clusterresourcebindings")
}

// binding returns a template's binding from the cache (nil if none).
func (e *Engine) binding(kind Kind, namespace, name string) *workv1.ResourceBinding {
	id := BindingName(name, kind.ID())
	if namespace != "" {
		id = namespace + "/" + id
	}
	obj, ok, _ := e.informers.ForResource(bindingResource(kind)).Informer().GetStore().GetByKey(id)
	if !ok {
		return nil
	}
	var b workv1.ResourceBinding
	if fromUnstructured(obj.(*unstructured.Unstructured), &b) != nil {
		return nil
	}
	return &b
}

// writeBinding records the decision and the members' state. A nil items
// keeps the previous member state (the placement failed).
func (e *Engine) writeBinding(ctx context.Context, kind Kind, k key, tmpl *unstructured.Unstructured, prev *workv1.ResourceBinding, d decision, items []workv1.AggregatedStatusItem) error {
	b := &workv1.ResourceBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: workv1.GroupVersion.String(), Kind: "ResourceBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: BindingName(k.Name, kind.ID()), Namespace: k.Namespace},
	}
	if !kind.Namespaced {
		b.Kind = "ClusterResourceBinding"
	}
	if prev != nil {
		b.Status = *prev.Status.DeepCopy()
		b.Generation = prev.Generation
	}
	b.Spec.Resource = workv1.ObjectReference{APIVersion: kind.APIVersion(), Kind: kind.Kind, Namespace: k.Namespace, Name: k.Name}
	// The template's UID, not its resourceVersion: a binding that changed
	// with every template change would cost two writes per change.
	if tmpl != nil {
		b.Spec.Resource.UID = string(tmpl.GetUID())
	} else if prev != nil {
		b.Spec.Resource.UID = prev.Spec.Resource.UID
	}
	if d.err != nil && prev != nil {
		b.Spec = *prev.Spec.DeepCopy()
	} else {
		b.Spec.Replicas = d.replicas
		b.Spec.PolicyRef = d.policy
		b.Spec.ConflictResolution = d.conflict
		b.Spec.RequiredBy = d.requiredBy
		b.Spec.PropagateDeps = d.propagateDeps
		b.Spec.Clusters = nil
		for _, name := range sortedKeys(d.targets) {
			b.Spec.Clusters = append(b.Spec.Clusters, workv1.TargetCluster{Name: name, Replicas: d.targets[name]})
		}
	}
	scheduled := metav1.Condition{Type: workv1.ConditionScheduled, Status: metav1.ConditionTrue, Reason: "Scheduled",
		Message: fmt.Sprintf("placed on %d member(s)", len(d.targets))}
	switch {
	case d.err != nil:
		scheduled.Status, scheduled.Reason, scheduled.Message = metav1.ConditionFalse, "PlacementFailed", d.err.Error()
	case tmpl == nil:
		scheduled.Status, scheduled.Reason, scheduled.Message = metav1.ConditionFalse, "TemplateDeleted", "the template is gone; its copies are being removed"
	case len(d.targets) == 0:
		scheduled.Status, scheduled.Reason = metav1.ConditionFalse, "NoMember"
		scheduled.Message = d.message
		if scheduled.Message == "" {
			scheduled.Message = "no policy selects the resource, or no member is ready"
		}
	case d.message != "":
		scheduled.Message += "; " + d.message
	}
	meta.SetStatusCondition(&b.Status.Conditions, scheduled)
	if items != nil {
		b.Status.AggregatedStatus = items
		applied := metav1.Condition{Type: workv1.ConditionFullyApplied, Status: metav1.ConditionTrue, Reason: "Applied", Message: "every member carries the resource"}
		var failing []string
		for _, it := range items {
			if _, target := d.targets[it.ClusterName]; target && !it.Applied {
				failing = append(failing, it.ClusterName+": "+it.AppliedMessage)
			}
		}
		if len(failing) > 0 {
			applied.Status, applied.Reason, applied.Message = metav1.ConditionFalse, "NotApplied", strings.Join(failing, "; ")
		}
		meta.SetStatusCondition(&b.Status.Conditions, applied)
	}
	if prev != nil && equalBinding(prev, b) {
		return nil
	}

	res := e.fleet.Resource(bindingResource(kind)).Namespace(k.Namespace)
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(b)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: obj}
	status := u.Object["status"]
	delete(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "metadata", "generation")
	applied, err := res.Apply(ctx, b.Name, u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil {
		return fmt.Errorf("write binding %s: %w", b.Name, err)
	}
	st := &unstructured.Unstructured{Object: map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(),
		"metadata": map[string]any{"name": b.Name, "namespace": k.Namespace}, "status": status}}
	if m, ok := status.(map[string]any); ok {
		m["observedGeneration"] = applied.GetGeneration()
	}
	if _, err := res.ApplyStatus(ctx, b.Name, st, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return fmt.Errorf("write binding status %s: %w", b.Name, err)
	}
	return nil
}

func equalBinding(a, b *workv1.ResourceBinding) bool {
	sa, sb := a.Status.DeepCopy(), b.Status.DeepCopy()
	sa.ObservedGeneration, sb.ObservedGeneration = 0, 0
	for _, s := range []*workv1.BindingStatus{sa, sb} {
		for i := range s.Conditions {
			s.Conditions[i].LastTransitionTime = metav1.Time{}
			s.Conditions[i].ObservedGeneration = 0
		}
	}
	ja, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&workv1.ResourceBinding{Spec: a.Spec, Status: *sa})
	jb, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&workv1.ResourceBinding{Spec: b.Spec, Status: *sb})
	return equalJSON(ja, jb)
}

func (e *Engine) deleteBinding(ctx context.Context, kind Kind, k key) error {
	err := e.fleet.Resource(bindingResource(kind)).Namespace(k.Namespace).Delete(ctx, BindingName(k.Name, kind.ID()), metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
