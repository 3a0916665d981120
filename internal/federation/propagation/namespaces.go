package propagation

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// deleteNamespaceCopy deletes a namespace the fleet made in a member, unless
// something in it was not made by the fleet: deleting the namespace would
// take that with it. Such a namespace is orphaned instead (the fleet's
// marks removed) and stays.
func deleteNamespaceCopy(ctx context.Context, cfg *rest.Config, client dynamic.Interface, fleetKey string, ns *unstructured.Unstructured) error {
	foreign, err := foreignContent(ctx, cfg, client, fleetKey, ns.GetName())
	if err != nil {
		// What the namespace holds is not known for sure: it stays.
		foreign = "objects that could not be listed (" + err.Error() + ")"
	}
	nsGVR := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	if foreign != "" {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
			"labels":      map[string]any{lotsev1.LabelFleet: nil},
			"annotations": map[string]any{AnnotationFleet: nil, AnnotationTemplate: nil},
		}})
		_, err := client.Resource(nsGVR).Patch(ctx, ns.GetName(), types.MergePatchType, patch, metav1.PatchOptions{})
		if err != nil && !isGone(err) {
			return fmt.Errorf("namespace %s holds %s, which the fleet did not make; leaving the namespace: %w", ns.GetName(), foreign, err)
		}
		return nil
	}
	uid := ns.GetUID()
	err = client.Resource(nsGVR).Delete(ctx, ns.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !isGone(err) {
		return err
	}
	return nil
}

// foreignContent names an object in a member's namespace that the fleet
// did not make and that nothing else owns ("" when there is none).
// Objects every namespace gets (its root CA ConfigMap, default
// ServiceAccount), events, and Endpoints (made from Services) do not
// count.
func foreignContent(ctx context.Context, cfg *rest.Config, client dynamic.Interface, fleetKey, namespace string) (string, error) {
	dcfg := rest.CopyConfig(cfg)
	dcfg.Timeout = 10 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(dcfg)
	if err != nil {
		return "", err
	}
	lists, err := dc.ServerPreferredNamespacedResources()
	if err != nil {
		return "", err // a group that does not answer may hold anything
	}
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") || r.Name == "events" || r.Name == "endpoints" {
				continue
			}
			items, err := client.Resource(gv.WithResource(r.Name)).Namespace(namespace).List(ctx, metav1.ListOptions{})
			if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
				continue
			}
			if err != nil {
				return "", fmt.Errorf("list %s: %w", r.Name, err)
			}
			for _, it := range items.Items {
				switch {
				case it.GetAnnotations()[AnnotationFleet] == fleetKey, len(it.GetOwnerReferences()) > 0,
					r.Name == "configmaps" && it.GetName() == "kube-root-ca.crt",
					r.Name == "serviceaccounts" && it.GetName() == "default":
					continue
				}
				return fmt.Sprintf("%s %s", r.Kind, it.GetName()), nil
			}
		}
	}
	return "", nil
}
