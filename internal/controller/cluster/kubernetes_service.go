package cluster

import (
	"context"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/tasks"
)

// TaskKubernetesService points the `kubernetes` Service at the node endpoint.
const TaskKubernetesService = "kubernetes-service"

// kubernetesServiceTask keeps the `kubernetes` Service's Endpoints and
// EndpointSlice in every cluster, with or without nodes: the API servers run
// with --endpoint-reconciler-type=none (they listen on loopback ports that
// differ per instance), so Lotse writes both, with the same address and port.
func (r *Reconciler) kubernetesServiceTask(spec controlplane.Spec) tasks.Task {
	return tasks.Task{Name: TaskKubernetesService, DependsOn: []string{r.EndpointTask(spec)}, Run: func(ctx context.Context) (bool, string, error) {
		access, err := r.Backend.NodeAccess(spec)
		if err != nil {
			return false, "", err
		}
		cs, err := r.tenantClient(spec)
		if err != nil {
			return false, "", err
		}
		return true, "", ensureKubernetesEndpoints(ctx, cs, access.Gateway, int32(access.APIPort))
	}}
}

// ensureKubernetesEndpoints writes the Endpoints and the EndpointSlice of
// the `kubernetes` Service: one address, port "https".
func ensureKubernetesEndpoints(ctx context.Context, cs kubernetes.Interface, address string, port int32) error {
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault, Labels: map[string]string{
			discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: "lotse.dev"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{address}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	slices := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault)
	if err := keepObject(
		func() (*discoveryv1.EndpointSlice, error) { return slices.Get(ctx, slice.Name, metav1.GetOptions{}) },
		func() error { _, err := slices.Create(ctx, slice, metav1.CreateOptions{}); return err },
		func(cur *discoveryv1.EndpointSlice) bool {
			return maps.Equal(cur.Labels, slice.Labels) && cur.AddressType == slice.AddressType &&
				apiequality.Semantic.DeepEqual(cur.Endpoints, slice.Endpoints) && apiequality.Semantic.DeepEqual(cur.Ports, slice.Ports)
		},
		func(cur *discoveryv1.EndpointSlice) error {
			if cur.AddressType != slice.AddressType {
				// Immutable: a slice of another address type is replaced.
				err := slices.Delete(ctx, cur.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cur.UID}})
				if err != nil && !apierrors.IsNotFound(err) {
					return err
				}
				_, err = slices.Create(ctx, slice, metav1.CreateOptions{})
				return err
			}
			cur.Labels, cur.Endpoints, cur.Ports = slice.Labels, slice.Endpoints, slice.Ports
			_, err := slices.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		}); err != nil {
		return fmt.Errorf("the EndpointSlice default/kubernetes: %w", err)
	}
	// Endpoints are deprecated but still read by clients and tools (kubectl
	// get endpoints, older controllers), and every conformant cluster has
	// them. skip-mirror keeps the mirroring controller from making a second
	// slice of them.
	//lint:ignore SA1019 the kubernetes Service must still have Endpoints
	eps := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault, Labels: map[string]string{
			discoveryv1.LabelSkipMirror: "true"}},
		//lint:ignore SA1019 see above
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: address}},
			Ports:     []corev1.EndpointPort{{Name: "https", Port: port, Protocol: corev1.ProtocolTCP}},
		}},
	}
	endpoints := cs.CoreV1().Endpoints(metav1.NamespaceDefault)
	if err := keepObject(
		//lint:ignore SA1019 see above
		func() (*corev1.Endpoints, error) { return endpoints.Get(ctx, eps.Name, metav1.GetOptions{}) },
		func() error { _, err := endpoints.Create(ctx, eps, metav1.CreateOptions{}); return err },
		//lint:ignore SA1019 see above
		func(cur *corev1.Endpoints) bool {
			return maps.Equal(cur.Labels, eps.Labels) && apiequality.Semantic.DeepEqual(cur.Subsets, eps.Subsets)
		},
		//lint:ignore SA1019 see above
		func(cur *corev1.Endpoints) error {
			cur.Labels, cur.Subsets = eps.Labels, eps.Subsets
			_, err := endpoints.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		}); err != nil {
		return fmt.Errorf("the Endpoints default/kubernetes: %w", err)
	}
	return nil
}

// keepObject makes an object what it should be with as few requests as
// possible: read it, create it when missing, update it only when it
// differs. The cluster controller runs this on every periodic reconcile
// of every cluster, so a converged object costs one read and no write
// (a write would wake every watcher of it, kube-proxy on each node).
func keepObject[T any](get func() (T, error), create func() error, equal func(T) bool, update func(T) error) error {
	cur, err := get()
	if apierrors.IsNotFound(err) {
		if err := create(); !apierrors.IsAlreadyExists(err) {
			return err
		}
		if cur, err = get(); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if equal(cur) {
		return nil
	}
	return update(cur)
}
