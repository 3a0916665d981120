// Package patch is the one way Lotse's reconcilers write status: a JSON
// merge patch of the status subresource against the object as the
// reconcile read it. A merge patch carries no resourceVersion, so a spec
// change or another write in between does not make the status write fail
// (the level-triggered reconcile that the change queues corrects whatever
// the status says); every other error is returned, never dropped.
package patch

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
