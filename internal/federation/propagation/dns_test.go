package propagation

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"
)

func TestServing(t *testing.T) {
	service := func(selector bool) *unstructured.Unstructured {
		svc := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Service",
			"metadata": map[string]any{"namespace": "web", "name": "front"}, "spec": map[string]any{}}}
		if selector {
			svc.Object["spec"] = map[string]any{"selector": map[string]any{"app": "front"}}
		}
		return svc
	}
	slice := func(name, service string, ready ...any) *unstructured.Unstructured {
		var eps []any
		for _, r := range ready {
			ep := map[string]any{"addresses": []any{"10.0.0.1"}}
			if r != nil {
				ep["conditions"] = map[string]any{"ready": r}
			}
			eps = append(eps, ep)
		}
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
			"metadata":  map[string]any{"namespace": "web", "name": name, "labels": map[string]any{"kubernetes.io/service-name": service}},
			"endpoints": eps}}
	}
	tests := []struct {
		name      string
		selector  bool
		slices    []*unstructured.Unstructured
		forbidden bool
		want      bool
	}{
		{"no endpoints yet", true, nil, false, false},
		{"only endpoints that are not ready", true, []*unstructured.Unstructured{slice("a", "front", false, false)}, false, false},
		{"one ready endpoint", true, []*unstructured.Unstructured{slice("a", "front", false), slice("b", "front", true)}, false, true},
		{"readiness unknown counts as ready", true, []*unstructured.Unstructured{slice("a", "front", nil)}, false, true},
		{"another Service's ready endpoints do not count", true, []*unstructured.Unstructured{slice("a", "back", true)}, false, false},
		{"an empty slice", true, []*unstructured.Unstructured{slice("a", "front")}, false, false},
		{"a Service without a selector serves", false, nil, false, true},
		{"a member that may not read EndpointSlices serves", true, nil, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inf := cache.NewSharedIndexInformer(&cache.ListWatch{}, &unstructured.Unstructured{}, 0, cache.Indexers{byService: serviceOfSlice})
			for _, s := range tt.slices {
				slim, err := slimSlice(s) // as the informer keeps them
				if err != nil {
					t.Fatal(err)
				}
				if err := inf.GetIndexer().Add(slim); err != nil {
					t.Fatal(err)
				}
			}
			c := &memberConn{endpoints: inf}
			c.endpointsForbidden.Store(tt.forbidden)
			if got := serving(service(tt.selector), c); got != tt.want {
				t.Errorf("serving = %v, want %v", got, tt.want)
			}
		})
	}
}
