package cluster

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
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
	if err := upsert(ctx, slice,
		func() error { _, err := slices.Create(ctx, slice, metav1.CreateOptions{}); return err },
		func() error {
			cur, err := slices.Get(ctx, slice.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur.Labels, cur.Endpoints, cur.Ports = slice.Labels, slice.Endpoints, slice.Ports
			_, err = slices.Update(ctx, cur, metav1.UpdateOptions{})
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
	if err := upsert(ctx, eps,
		func() error { _, err := endpoints.Create(ctx, eps, metav1.CreateOptions{}); return err },
		func() error {
			cur, err := endpoints.Get(ctx, eps.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur.Labels, cur.Subsets = eps.Labels, eps.Subsets
			_, err = endpoints.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		}); err != nil {
		return fmt.Errorf("the Endpoints default/kubernetes: %w", err)
	}
	return nil
}
