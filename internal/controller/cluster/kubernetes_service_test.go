package cluster

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestEnsureKubernetesEndpoints(t *testing.T) {
	tests := []struct {
		name     string
		existing []any
	}{
		{"fresh cluster", nil},
		{"a slice of another address type is replaced", []any{
			&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"}, AddressType: discoveryv1.AddressTypeIPv6,
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"fd00::9"}}}},
		}},
		{"stale objects are corrected", []any{
			&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"}, AddressType: discoveryv1.AddressTypeIPv4,
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.9"}}}},
			//lint:ignore SA1019 the kubernetes Service must still have Endpoints
			&corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
				//lint:ignore SA1019 see above
				Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "10.0.0.9"}}}}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			cs := fake.NewClientset()
			for _, o := range tt.existing {
				switch o := o.(type) {
				case *discoveryv1.EndpointSlice:
					_, _ = cs.DiscoveryV1().EndpointSlices("default").Create(ctx, o, metav1.CreateOptions{})
				//lint:ignore SA1019 see above
				case *corev1.Endpoints:
					_, _ = cs.CoreV1().Endpoints("default").Create(ctx, o, metav1.CreateOptions{})
				}
			}
			if err := ensureKubernetesEndpoints(ctx, cs, "10.250.0.1", 31443); err != nil {
				t.Fatal(err)
			}
			// Converged: the next run (every periodic reconcile) only
			// reads.
			cs.ClearActions()
			if err := ensureKubernetesEndpoints(ctx, cs, "10.250.0.1", 31443); err != nil {
				t.Fatal(err)
			}
			for _, a := range cs.Actions() {
				if a.GetVerb() != "get" {
					t.Errorf("converged objects were written again: %s %s", a.GetVerb(), a.GetResource().Resource)
				}
			}
			slice, err := cs.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			eps, err := cs.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if slice.AddressType != discoveryv1.AddressTypeIPv4 || len(slice.Endpoints) != 1 || slice.Endpoints[0].Addresses[0] != "10.250.0.1" || *slice.Ports[0].Port != 31443 || *slice.Ports[0].Name != "https" {
				t.Errorf("EndpointSlice: %+v %+v", slice.Endpoints, slice.Ports)
			}
			if slice.Labels[discoveryv1.LabelServiceName] != "kubernetes" {
				t.Errorf("EndpointSlice labels %v", slice.Labels)
			}
			if len(eps.Subsets) != 1 || len(eps.Subsets[0].Addresses) != 1 || eps.Subsets[0].Addresses[0].IP != "10.250.0.1" ||
				eps.Subsets[0].Ports[0].Port != 31443 || eps.Subsets[0].Ports[0].Name != "https" {
				t.Errorf("Endpoints: %+v", eps.Subsets)
			}
			if eps.Labels[discoveryv1.LabelSkipMirror] != "true" {
				t.Errorf("Endpoints without %s: the mirroring controller would make a second slice", discoveryv1.LabelSkipMirror)
			}
		})
	}
}
