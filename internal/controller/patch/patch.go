// Package patch is the one way Lotse's reconcilers write status: a JSON
// merge patch of the status subresource against the object as the
// reconcile read it. A merge patch carries no resourceVersion, so a spec
// change or another write in between does not make the status write fail
// (the level-triggered reconcile that the change queues corrects whatever
// the status says); every other error is returned, never dropped.
package patch

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Status writes obj's status, as changed since before (a deep copy of obj
// taken when it was read). An object that is gone needs no status.
func Status(ctx context.Context, c client.Client, obj, before client.Object) error {
	err := c.Status().Patch(ctx, obj, client.MergeFrom(before))
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("write status of %s: %w", client.ObjectKeyFromObject(obj), err)
	}
	return nil
}

// RemoveAnnotationIf removes an annotation only while it still has the
// given value (a JSON patch with a test), so a newer value someone wrote
// in between is kept. obj is updated from the answer.
func RemoveAnnotationIf(ctx context.Context, c client.Client, obj client.Object, key, value string) error {
	if obj.GetAnnotations()[key] != value {
		return nil
	}
	path := "/metadata/annotations/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(key)
	ops, err := json.Marshal([]map[string]any{{"op": "test", "path": path, "value": value}, {"op": "remove", "path": path}})
	if err != nil {
		return err
	}
	err = c.Patch(ctx, obj, client.RawPatch(types.JSONPatchType, ops))
	if err == nil || apierrors.IsNotFound(err) {
		return nil
	}
	// The test failed (422) if the annotation changed: then nothing of
	// ours is left to remove. Any other failure is returned.
	current := obj.DeepCopyObject().(client.Object)
	if gerr := c.Get(ctx, client.ObjectKeyFromObject(obj), current); gerr == nil && current.GetAnnotations()[key] != value {
		return nil
	}
	return fmt.Errorf("remove annotation %s of %s: %w", key, client.ObjectKeyFromObject(obj), err)
}
