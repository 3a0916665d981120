package propagation

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// What a fleet's copy in a member is, for both ways a member gets it: the
// engine applying it (push) and a member's agent applying a Work (pull).

// Health says how a member's copy of a kind (its Kind, or Kind.group for
// a custom kind) is doing: Healthy, Unhealthy or Unknown.
func Health(kind string, obj *unstructured.Unstructured) string { return health(kind, obj) }

// ConflictError is the refusal to take over a member's own object.
func ConflictError(kind, name string) error {
	return fmt.Errorf("%s %s already exists in the member and was not made by this fleet; the policy's conflictResolution: Overwrite takes it over", kind, name)
}

// MadeBy reports whether a member's object is a copy fleetKey made.
func MadeBy(obj *unstructured.Unstructured, fleetKey string) bool {
	return obj != nil && obj.GetAnnotations()[AnnotationFleet] == fleetKey
}

// DeleteCopy deletes a copy the fleet made in a member (obj, as read
// there, of resource gvr): a namespace only if nothing in it was made by
// someone else (else it is orphaned), a CRD only with no foreign objects
// of its kind, anything else by its UID.
func DeleteCopy(ctx context.Context, cfg *rest.Config, client dynamic.Interface, gvr schema.GroupVersionResource, fleetKey, fleetName string, obj *unstructured.Unstructured) error {
	switch {
	case gvr.Group == "" && gvr.Resource == "namespaces":
		return deleteNamespaceCopy(ctx, cfg, client, fleetKey, obj)
	case gvr == crdGVR:
		return deleteCRDCopy(ctx, client, fleetKey, fleetName, obj)
	}
	uid := obj.GetUID()
	err := client.Resource(gvr).Namespace(obj.GetNamespace()).Delete(ctx, obj.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !isGone(err) {
		return err
	}
	return nil
}
