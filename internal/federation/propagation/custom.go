package propagation

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
)

// Custom kinds. A CustomResourceDefinition in the fleet is a template like
// any other (it goes where a policy says). Once it is established in the
// fleet, the engine also watches the objects of its kind there and
// propagates them by policy like built-in ones. A member learns the kind
// from the CRD's copy: until that is established there, an object's apply
// fails and is tried again with growing pauses.
//
// A member's copies of custom objects are read live, not from a watch:
// the member may not know the kind yet, and a watch of an unknown kind
// never syncs. A copy changed in a member is put back by the periodic
// pass.

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// ownGroup reports whether an API group is Lotse's federation API in the
// fleet (policies, bindings): its CRDs and objects never propagate.
func ownGroup(group string) bool {
	return group == policyv1.GroupVersion.Group || group == workv1.GroupVersion.Group
}

// customKind is a kind a CRD in the fleet defines, with the informer of
// its templates.
type customKind struct {
	kind     Kind
	crd      types.UID
	informer cache.SharedIndexInformer // nil once its CRD is gone: no template left
	stop     context.CancelFunc
}

// kindOfCRD returns the kind a CRD defines (at its storage version) and
// whether the CRD is established, so that its objects can be watched.
func kindOfCRD(crd *unstructured.Unstructured) (k Kind, established bool) {
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
	plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
	scope, _, _ := unstructured.NestedString(crd.Object, "spec", "scope")
	k = Kind{Kind: kind, Namespaced: scope == "Namespaced", Custom: true}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		vm, _ := v.(map[string]any)
		name, _ := vm["name"].(string)
		if served, _ := vm["served"].(bool); !served || name == "" {
			continue
		}
		k.Versions = append(k.Versions, name)
		if storage, _ := vm["storage"].(bool); storage {
			k.GVR = schema.GroupVersionResource{Group: group, Version: name, Resource: plural}
		}
	}
	conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conditions {
		cm, _ := c.(map[string]any)
		if cm["type"] == "Established" && cm["status"] == "True" {
			established = true
		}
	}
	return k, established && k.GVR.Version != "" && kind != "" && plural != "" && !ownGroup(group)
}

// crdChanged keeps the custom kinds in step with the fleet's CRDs: the
// objects of an established CRD are watched; once a CRD is gone, so are
// its objects (each is looked at again, and its copies and binding go).
func (e *Engine) crdChanged(obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, deleted = d.Obj, true
	}
	crd, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	k, established := kindOfCRD(crd)
	if k.Kind == "" || k.GVR.Group == "" {
		return
	}
	e.mu.Lock()
	ctx := e.ctx
	e.mu.Unlock()
	if ctx == nil {
		return // not running yet: the informer's first list comes again
	}
	e.customMu.Lock()
	defer e.customMu.Unlock()
	if e.custom == nil {
		e.custom = map[string]*customKind{}
	}
	id := k.ID()
	cur := e.custom[id]
	retire := func() {
		// The old watch ends and what it held is looked at again.
		cur.stop()
		for _, o := range cur.informer.GetStore().List() {
			e.enqueueObject(cur.kind, o)
		}
		cur.informer = nil
	}
	if deleted {
		if cur != nil && cur.crd == crd.GetUID() && cur.informer != nil {
			retire()
		}
		return
	}
	if !established {
		return // its next update comes when it is
	}
	if cur != nil && cur.informer != nil && cur.crd == crd.GetUID() && cur.kind.GVR == k.GVR && cur.kind.Namespaced == k.Namespaced {
		cur.kind.Versions = k.Versions // another served version needs no new watch
		return
	}
	// The new watch is set up before the old one ends, so that the kind
	// never has no watch while its CRD exists.
	informer := dynamicinformer.NewFilteredDynamicInformer(e.fleet, k.GVR, metav1.NamespaceAll, 10*time.Minute,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}, nil).Informer()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { e.enqueueObject(k, obj) },
		UpdateFunc: func(_, obj any) { e.enqueueObject(k, obj) },
		DeleteFunc: func(obj any) { e.enqueueObject(k, obj) },
	}); err != nil {
		return
	}
	if cur != nil && cur.informer != nil {
		retire() // replaced, or serving another version
	}
	ictx, stop := context.WithCancel(ctx)
	e.custom[id] = &customKind{kind: k, crd: crd.GetUID(), informer: informer, stop: stop}
	go informer.RunWithContext(ictx)
}

// kind returns a kind by its ID: a built-in one, or one a CRD in the
// fleet defines (also after the CRD is gone, while its objects' copies
// and bindings are being removed).
func (e *Engine) kind(id string) (Kind, bool) {
	if k, ok := kindByName(id); ok {
		return k, true
	}
	e.customMu.RLock()
	defer e.customMu.RUnlock()
	if ck, ok := e.custom[id]; ok {
		return ck.kind, true
	}
	return Kind{}, false
}

// store is the cache of a kind's templates; nil for a custom kind whose
// CRD is gone (no template of it is left).
func (e *Engine) store(k Kind) cache.Store {
	if !k.Custom {
		return e.informers.ForResource(k.GVR).Informer().GetStore()
	}
	e.customMu.RLock()
	defer e.customMu.RUnlock()
	if ck, ok := e.custom[k.ID()]; ok && ck.informer != nil {
		return ck.informer.GetStore()
	}
	return nil
}

// kindSynced reports whether a kind's templates have been listed: before
// that, a template missing from the cache proves nothing.
func (e *Engine) kindSynced(k Kind) bool {
	if !k.Custom {
		return true // Run waits for the built-in kinds
	}
	e.customMu.RLock()
	defer e.customMu.RUnlock()
	ck, ok := e.custom[k.ID()]
	return ok && (ck.informer == nil || ck.informer.HasSynced())
}

// customKinds lists the custom kinds, by ID.
func (e *Engine) customKinds() []Kind {
	e.customMu.RLock()
	defer e.customMu.RUnlock()
	out := make([]Kind, 0, len(e.custom))
	for _, ck := range e.custom {
		out = append(out, ck.kind)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// stopCustom ends the watches of the custom kinds.
func (e *Engine) stopCustom() {
	e.customMu.Lock()
	defer e.customMu.Unlock()
	for _, ck := range e.custom {
		if ck.informer != nil {
			ck.stop()
		}
	}
}

// kindID is the ID of the kind a binding names.
func kindID(apiVersion, kind string) string {
	if k, ok := kindByName(kind); ok && k.APIVersion() == apiVersion {
		return kind
	}
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil || gv.Group == "" {
		return kind
	}
	return kind + "." + gv.Group
}

// unknownKind handles a queued template whose kind the engine does not
// know: a CRD not established yet (looked at again soon), or one that was
// deleted while Lotse was down, whose binding then goes. Its copies went
// with the CRD's copies (deleteCRDCopy removes the fleet's objects of the
// kind in every case).
func (e *Engine) unknownKind(ctx context.Context, k key) (result, error) {
	kindName, group, custom := strings.Cut(k.Kind, ".")
	if !custom {
		return result{}, nil
	}
	for _, obj := range e.informers.ForResource(crdGVR).Informer().GetStore().List() {
		crd := obj.(*unstructured.Unstructured)
		g, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		name, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
		if g == group && name == kindName {
			return result{after: 2 * time.Second}, nil
		}
	}
	gone := Kind{GVR: schema.GroupVersionResource{Group: group}, Kind: kindName, Namespaced: k.Namespace != "", Custom: true}
	return result{}, e.deleteBinding(ctx, gone, k)
}

// liveCopy reads a member's copy of a custom object (nil when the member
// has none, or not one this fleet made).
func (e *Engine) liveCopy(ctx context.Context, client dynamic.Interface, k Kind, namespace, name string) (*unstructured.Unstructured, error) {
	obj, err := client.Resource(k.GVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil // the object, or the member's whole kind
	case err != nil:
		return nil, err
	case obj.GetAnnotations()[AnnotationFleet] != e.Fleet:
		return nil, nil
	}
	return obj, nil
}

// memberCopyOf is a member's copy of a template made by this fleet: from
// the member's cache for a built-in kind, read live for a custom one.
func (e *Engine) memberCopyOf(ctx context.Context, c *memberConn, k Kind, namespace, name string) (*unstructured.Unstructured, error) {
	if k.Custom {
		cp, err := e.liveCopy(ctx, c.client, k, namespace, name)
		if apierrors.IsForbidden(err) {
			return nil, nil // credentials that may not read the kind made no copy of it
		}
		return cp, err
	}
	if !c.synced() {
		return nil, fmt.Errorf("member cache not synced yet")
	}
	return e.copyOf(c, k, namespace, name), nil
}

// removeCustomCopies deletes the fleet's copies of custom objects in a
// member, of every kind the member serves (also a kind whose CRD is the
// member's own). A kind the credentials may not touch cannot hold a copy
// the fleet made with them, and is passed over.
func removeCustomCopies(ctx context.Context, client dynamic.Interface, fleetKey, fleetName string) error {
	crds, err := client.Resource(crdGVR).List(ctx, metav1.ListOptions{})
	if apierrors.IsForbidden(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for i := range crds.Items {
		if err := removeCopiesOfKind(ctx, client, fleetKey, fleetName, &crds.Items[i]); err != nil {
			return err
		}
	}
	return nil
}

// removeCopiesOfKind deletes the fleet's copies of the objects of the kind
// a member's CRD defines.
func removeCopiesOfKind(ctx context.Context, client dynamic.Interface, fleetKey, fleetName string, crd *unstructured.Unstructured) error {
	k, established := kindOfCRD(crd)
	if !established {
		return nil // no object of it can exist
	}
	list, err := client.Resource(k.GVR).Namespace(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: lotsev1.LabelFleet + "=" + fleetName})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err), apierrors.IsMethodNotSupported(err):
		return nil // the kind is going, or not the fleet's to touch
	case err != nil:
		return err
	}
	for _, obj := range list.Items {
		if obj.GetAnnotations()[AnnotationFleet] != fleetKey {
			continue
		}
		uid := obj.GetUID()
		err := client.Resource(k.GVR).Namespace(obj.GetNamespace()).Delete(ctx, obj.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !isGone(err) && !apierrors.IsForbidden(err) {
			return err
		}
	}
	return nil
}

// deleteCRDCopy removes a member's copy of a CRD, and with it the objects
// of its kind. If objects of its kind that the fleet did not make are in
// the member, deleting the CRD would delete them too: then only the
// fleet's objects go, and the CRD stays without the fleet's marks (as a
// namespace holding the member's own objects does).
func deleteCRDCopy(ctx context.Context, client dynamic.Interface, fleetKey, fleetName string, crd *unstructured.Unstructured) error {
	foreign := ""
	if k, established := kindOfCRD(crd); established {
		list, err := client.Resource(k.GVR).Namespace(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			foreign = "objects that could not be listed (" + err.Error() + ")"
		default:
			for _, obj := range list.Items {
				if obj.GetAnnotations()[AnnotationFleet] != fleetKey {
					foreign = fmt.Sprintf("%s %s", k.Kind, strings.TrimPrefix(obj.GetNamespace()+"/"+obj.GetName(), "/"))
					break
				}
			}
		}
	}
	if foreign != "" {
		// The CRD stays for the member's own objects; the fleet's go.
		if err := removeCopiesOfKind(ctx, client, fleetKey, fleetName, crd); err != nil {
			return err
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
			"labels":      map[string]any{lotsev1.LabelFleet: nil},
			"annotations": map[string]any{AnnotationFleet: nil, AnnotationTemplate: nil, AnnotationDigest: nil},
		}})
		_, err := client.Resource(crdGVR).Patch(ctx, crd.GetName(), types.MergePatchType, patch, metav1.PatchOptions{})
		if err != nil && !isGone(err) {
			return fmt.Errorf("CRD %s has objects the fleet did not make (%s); leaving the CRD: %w", crd.GetName(), foreign, err)
		}
		return nil
	}
	uid := crd.GetUID()
	err := client.Resource(crdGVR).Delete(ctx, crd.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !isGone(err) {
		return err
	}
	return nil
}
