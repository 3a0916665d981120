package propagation

import (
	"context"
	"fmt"
	"net"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// ServiceAddresses answers the fleet's DNS: the addresses of every ready
// member (of region, when set) whose copy of the Service namespace/name
// has a ready endpoint behind it: its load-balancer ingress IPs, or for a NodePort Service the
// internal addresses of its Ready nodes. known is false when the fleet has
// no such Service; an error says the engine's view is not complete yet
// (a ready member not watched yet), which must not be cached as "none".
func (e *Engine) ServiceAddresses(ctx context.Context, namespace, name, region string) (addrs []net.IP, known bool, err error) {
	svcKind, _ := kindByName("Service")
	if e.template(svcKind, namespace, name) == nil {
		return nil, false, nil
	}
	members, err := e.Members.Members(ctx)
	if err != nil {
		return nil, true, err
	}
	b := e.binding(svcKind, namespace, name)
	for _, m := range members {
		// A pull-mode member's Services are not answered for: the fleet
		// does not see its endpoints or nodes.
		if !m.Ready || m.Pull || (region != "" && m.Region != region) {
			continue
		}
		e.mu.Lock()
		c := e.connected[m.Name]
		e.mu.Unlock()
		if c == nil || !c.synced() || !c.nodes.HasSynced() || (!c.endpoints.HasSynced() && !c.endpointsForbidden.Load()) {
			if hadCopy(b, m.Name) {
				return nil, true, fmt.Errorf("member %s is not watched yet", m.Name)
			}
			continue
		}
		svc := e.copyOf(c, svcKind, namespace, name)
		if svc == nil || !serving(svc, c) {
			continue
		}
		addrs = append(addrs, serviceAddresses(svc, c)...)
	}
	return addrs, true, nil
}

// serving reports whether a ready endpoint is behind a member's copy of
// a Service, as the member's EndpointSlices say (an endpoint whose
// readiness is unknown counts as ready, as the API asks). A Service
// without a selector has its endpoints managed by hand, or none that
// Kubernetes tracks: it counts as serving, and so does every Service of
// a member whose credentials may not read EndpointSlices.
func serving(svc *unstructured.Unstructured, c *memberConn) bool {
	if selector, _, _ := unstructured.NestedMap(svc.Object, "spec", "selector"); len(selector) == 0 || c.endpointsForbidden.Load() {
		return true
	}
	slices, err := c.endpoints.GetIndexer().ByIndex(byService, svc.GetNamespace()+"/"+svc.GetName())
	if err != nil {
		return false
	}
	for _, obj := range slices {
		slice, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		endpoints, _, _ := unstructured.NestedSlice(slice.Object, "endpoints")
		for _, ep := range endpoints {
			m, ok := ep.(map[string]any)
			if !ok {
				continue
			}
			ready, found, _ := unstructured.NestedBool(m, "conditions", "ready")
			if !found || ready {
				return true
			}
		}
	}
	return false
}

func serviceAddresses(svc *unstructured.Unstructured, c *memberConn) []net.IP {
	var out []net.IP
	ingress, _, _ := unstructured.NestedSlice(svc.Object, "status", "loadBalancer", "ingress")
	for _, in := range ingress {
		if m, ok := in.(map[string]any); ok {
			if ip := net.ParseIP(stringOf(m["ip"])); ip != nil {
				out = append(out, ip)
			}
		}
	}
	if len(out) > 0 {
		return out
	}
	if t, _, _ := unstructured.NestedString(svc.Object, "spec", "type"); t != "NodePort" && t != "LoadBalancer" {
		return nil
	}
	for _, obj := range c.nodes.GetStore().List() {
		node, ok := obj.(*unstructured.Unstructured)
		if !ok || !nodeReady(node) {
			continue
		}
		addresses, _, _ := unstructured.NestedSlice(node.Object, "status", "addresses")
		for _, a := range addresses {
			if m, ok := a.(map[string]any); ok && m["type"] == "InternalIP" {
				if ip := net.ParseIP(stringOf(m["address"])); ip != nil {
					out = append(out, ip)
				}
			}
		}
	}
	return out
}

func nodeReady(node *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(node.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			return m["status"] == "True"
		}
	}
	return false
}

func stringOf(v any) string {
	s, _ := v.(string)
	return s
}
