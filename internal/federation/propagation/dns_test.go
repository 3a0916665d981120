package propagation

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"

	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
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

func TestServingAddresses(t *testing.T) {
	service := func(typ string, selector bool, ingress ...string) *unstructured.Unstructured {
		spec := map[string]any{"type": typ}
		if selector {
			spec["selector"] = map[string]any{"app": "front"}
		}
		var in []any
		for _, ip := range ingress {
			in = append(in, map[string]any{"ip": ip})
		}
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Service",
			"metadata": map[string]any{"namespace": "web", "name": "front"}, "spec": spec,
			"status": map[string]any{"loadBalancer": map[string]any{"ingress": in}}}}
	}
	node := func(ip string, ready bool) *unstructured.Unstructured {
		status := "False"
		if ready {
			status = "True"
		}
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": ip},
			"status": map[string]any{
				"addresses":  []any{map[string]any{"type": "Hostname", "address": "n"}, map[string]any{"type": "InternalIP", "address": ip}},
				"conditions": []any{map[string]any{"type": "Ready", "status": status}}}}}
	}
	readySlice := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
		"metadata":  map[string]any{"namespace": "web", "name": "front-1"},
		"endpoints": []any{map[string]any{"addresses": []any{"10.1.0.1"}, "conditions": map[string]any{"ready": true}}}}}
	nodes := []*unstructured.Unstructured{node("10.9.0.1", true), node("10.9.0.2", false), node("10.9.0.3", true)}
	tests := []struct {
		name       string
		svc        *unstructured.Unstructured
		slices     []*unstructured.Unstructured
		unreadable bool
		want       string
	}{
		{"a load balancer's ingress", service("LoadBalancer", true, "192.0.2.7"), []*unstructured.Unstructured{readySlice}, false, "[192.0.2.7]"},
		{"a load balancer without ingress yet: its node ports", service("LoadBalancer", true), []*unstructured.Unstructured{readySlice}, false, "[10.9.0.1 10.9.0.3]"},
		{"a node port: the Ready nodes", service("NodePort", true), []*unstructured.Unstructured{readySlice}, false, "[10.9.0.1 10.9.0.3]"},
		{"no ready endpoint: nothing", service("LoadBalancer", true, "192.0.2.7"), nil, false, "[]"},
		{"endpoints that cannot be read count as serving", service("NodePort", true), nil, true, "[10.9.0.1 10.9.0.3]"},
		{"no selector counts as serving", service("NodePort", false), nil, false, "[10.9.0.1 10.9.0.3]"},
		{"a ClusterIP Service has no address outside", service("ClusterIP", true), []*unstructured.Unstructured{readySlice}, false, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprint(ServingAddresses(tt.svc, tt.slices, tt.unreadable, nodes)); got != tt.want {
				t.Errorf("ServingAddresses = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestAddressesIn(t *testing.T) {
	work := func(generation, observed int64, status metav1.ConditionStatus, kind string, addresses ...string) *workv1.Work {
		w := &workv1.Work{ObjectMeta: metav1.ObjectMeta{Generation: generation}}
		w.Status.Conditions = []metav1.Condition{{Type: workv1.ConditionApplied, Status: status, ObservedGeneration: observed}}
		w.Status.ManifestStatuses = []workv1.ManifestStatus{{Identifier: workv1.ResourceIdentifier{Version: "v1", Kind: kind, Name: "front"}, Addresses: addresses}}
		return w
	}
	tests := []struct {
		name string
		work *workv1.Work
		want string
	}{
		{"no Work", nil, "[]"},
		{"applied, current", work(2, 2, metav1.ConditionTrue, "Service", "10.9.0.1", "not-an-ip", "10.9.0.3"), "[10.9.0.1 10.9.0.3]"},
		{"a newer generation on its way: the last report stands", work(3, 2, metav1.ConditionTrue, "Service", "10.9.0.1"), "[10.9.0.1]"},
		{"not applied", work(2, 2, metav1.ConditionFalse, "Service", "10.9.0.1"), "[]"},
		{"not a Service's status", work(2, 2, metav1.ConditionTrue, "ConfigMap", "10.9.0.1"), "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprint(addressesIn(tt.work)); got != tt.want {
				t.Errorf("addressesIn = %s, want %s", got, tt.want)
			}
		})
	}
}
