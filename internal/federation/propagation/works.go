package propagation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
	"github.com/lotse/lotse/internal/federation/override"
)

// A pull-mode member is never reached by the engine: its copies go into
// Works in the member's execution namespace of the fleet's API, which the
// member's agent applies and reports on (package agent).

var worksGVR = workv1.GroupVersion.WithResource("works")

// annotationWorkKind on a Work is the kind (Kind.ID) of its template.
const annotationWorkKind = "work.lotse.dev/kind"

// WorkName names the Work of one template for a member: readable, and
// unique per kind, namespace and name.
func WorkName(kindID, namespace, name string) string {
	sum := sha256.Sum256([]byte(kindID + "/" + namespace + "/" + name))
	prefix := strings.ToLower(strings.SplitN(kindID, ".", 2)[0]) + "-" + name
	if len(prefix) > 200 {
		prefix = prefix[:200]
	}
	return strings.TrimRight(prefix, ".-") + "-" + hex.EncodeToString(sum[:4])
}

// cachedWork returns a Work from the engine's cache.
func (e *Engine) cachedWork(namespace, name string) *workv1.Work {
	obj, ok, _ := e.informers.ForResource(worksGVR).Informer().GetStore().GetByKey(namespace + "/" + name)
	if !ok {
		return nil
	}
	w := &workv1.Work{}
	if err := fromUnstructured(obj.(*unstructured.Unstructured), w); err != nil {
		return nil
	}
	return w
}

// applyWork is applyCopy for a pull-mode member: the copy goes into its
// Work, and what comes back is the copy with the status the member's
// agent reported for it.
func (e *Engine) applyWork(ctx context.Context, m Member, kind Kind, tmpl *unstructured.Unstructured, replicas int32, conflict string) (*unstructured.Unstructured, error) {
	obj := e.memberCopy(kind, tmpl, replicas)
	overriders, err := e.overridesFor(kind, tmpl, m.Member)
	if err != nil {
		return nil, err
	}
	if err := override.Apply(obj, overriders); err != nil {
		return nil, err
	}
	e.mark(obj, tmpl)
	digest, err := digestOf(obj)
	if err != nil {
		return nil, err
	}
	ann := obj.GetAnnotations()
	ann[AnnotationDigest] = digest
	obj.SetAnnotations(ann)

	ns, name := workv1.ExecutionNamespace(m.Name), WorkName(kind.ID(), tmpl.GetNamespace(), tmpl.GetName())
	w := e.cachedWork(ns, name)
	if w == nil || w.Annotations[AnnotationDigest] != digest || w.Spec.ConflictResolution != conflict || !w.DeletionTimestamp.IsZero() {
		raw, err := json.Marshal(obj.Object)
		if err != nil {
			return nil, err
		}
		want := &workv1.Work{
			TypeMeta: metav1.TypeMeta{APIVersion: workv1.GroupVersion.String(), Kind: "Work"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
				Labels: map[string]string{workv1.LabelMember: m.Name, lotsev1.LabelFleet: e.Name},
				Annotations: map[string]string{AnnotationTemplate: tmpl.GetNamespace() + "/" + tmpl.GetName(), annotationWorkKind: kind.ID(),
					AnnotationDigest: digest, AnnotationFleet: e.Fleet}},
			Spec: workv1.WorkSpec{Workload: workv1.WorkloadTemplate{Manifests: []workv1.Manifest{{RawExtension: runtime.RawExtension{Raw: raw}}}},
				ConflictResolution: conflict},
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(want)
		if err != nil {
			return nil, err
		}
		delete(u, "status")
		unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
		applied, err := e.fleet.Resource(worksGVR).Namespace(ns).Apply(ctx, name, &unstructured.Unstructured{Object: u},
			metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("the member's execution namespace %s is not in the fleet yet (its FleetMember sets it up): %w", ns, err)
		}
		if err != nil {
			return nil, err
		}
		w = &workv1.Work{}
		if err := fromUnstructured(applied, w); err != nil {
			return nil, err
		}
	}
	return reported(w, obj)
}

// reported is the member's copy as its agent reported it in the Work:
// the rendered object with the member object's generation and status. An
// apply the agent refused is the error.
func reported(w *workv1.Work, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	cond := apimeta.FindStatusCondition(w.Status.Conditions, workv1.ConditionApplied)
	if cond != nil && cond.ObservedGeneration == w.Generation && cond.Status == metav1.ConditionFalse {
		return nil, fmt.Errorf("the member's agent: %s", cond.Message)
	}
	out := obj.DeepCopy()
	if cond == nil || cond.ObservedGeneration != w.Generation || len(w.Status.ManifestStatuses) == 0 {
		return out, nil // not applied yet: no status to tell
	}
	st := w.Status.ManifestStatuses[0]
	out.SetGeneration(st.Generation)
	out.SetResourceVersion(st.ResourceVersion)
	if st.Status != nil {
		// Numbers as the API's own objects have them (int64, not float64):
		// the aggregation reads them so.
		var status any
		if err := utiljson.Unmarshal(st.Status.Raw, &status); err == nil {
			out.Object["status"] = status
		}
	}
	return out, nil
}

// removeWork deletes a pull-mode member's Work of a template; its agent
// removes the copy and then lets the Work go.
func (e *Engine) removeWork(ctx context.Context, m Member, kind Kind, k key) error {
	ns, name := workv1.ExecutionNamespace(m.Name), WorkName(kind.ID(), k.Namespace, k.Name)
	w := e.cachedWork(ns, name)
	if w == nil || !w.DeletionTimestamp.IsZero() {
		return nil
	}
	err := e.fleet.Resource(worksGVR).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !isGone(err) {
		return err
	}
	return nil
}

// RemoveWorks deletes every Work of a pull-mode member that leaves,
// through fleet (a client of the fleet's API); it returns an error while
// the member's agent has not removed them all.
func RemoveWorks(ctx context.Context, fleet dynamic.Interface, member string) error {
	ns := workv1.ExecutionNamespace(member)
	list, err := fleet.Resource(worksGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	left := 0
	for _, w := range list.Items {
		left++
		if w.GetDeletionTimestamp() != nil {
			continue
		}
		if err := fleet.Resource(worksGVR).Namespace(ns).Delete(ctx, w.GetName(), metav1.DeleteOptions{}); err != nil && !isGone(err) {
			return err
		}
	}
	if left > 0 {
		return fmt.Errorf("the member's agent is removing what %d Works applied", left)
	}
	return nil
}

// ForgetWorks lets a leaving pull-mode member's Works go without its
// agent (it has not renewed its lease for the grace period): their
// finalizers are removed, and what they applied stays in the member.
func ForgetWorks(ctx context.Context, fleet dynamic.Interface, member string) error {
	ns := workv1.ExecutionNamespace(member)
	list, err := fleet.Resource(worksGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	patch := []byte(`{"metadata":{"finalizers":null}}`)
	for _, w := range list.Items {
		if _, err := fleet.Resource(worksGVR).Namespace(ns).Patch(ctx, w.GetName(), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !isGone(err) {
			return err
		}
		if err := fleet.Resource(worksGVR).Namespace(ns).Delete(ctx, w.GetName(), metav1.DeleteOptions{}); err != nil && !isGone(err) {
			return err
		}
	}
	return nil
}

// workChanged queues the template of a Work whose status changed (the
// member's agent reported).
func (e *Engine) workChanged(old, cur any) {
	if d, ok := cur.(cache.DeletedFinalStateUnknown); ok {
		cur = d.Obj
	}
	u, ok := cur.(*unstructured.Unstructured)
	if !ok {
		return
	}
	if o, ok := old.(*unstructured.Unstructured); ok {
		os, _, _ := unstructured.NestedFieldNoCopy(o.Object, "status")
		ns, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status")
		if equalJSONAny(os, ns) && o.GetDeletionTimestamp().Equal(u.GetDeletionTimestamp()) {
			return
		}
	}
	namespace, name, found := strings.Cut(u.GetAnnotations()[AnnotationTemplate], "/")
	kind := u.GetAnnotations()[annotationWorkKind]
	if !found || kind == "" || u.GetAnnotations()[AnnotationFleet] != e.Fleet {
		return
	}
	e.queue.Add(key{Kind: kind, Namespace: namespace, Name: name})
}

func equalJSONAny(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}
