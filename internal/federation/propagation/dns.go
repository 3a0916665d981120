package propagation

import (
	"context"
	"fmt"
	"net"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
)

// ServiceAddresses answers the fleet's DNS: the addresses of every ready
// member (of region, when set) whose copy of the Service namespace/name
// has a ready endpoint behind it: its load-balancer ingress IPs, or for a
// NodePort Service (or a LoadBalancer one without them) the internal
// addresses of its Ready nodes; for a pull-mode member, what its agent
// reported. known is false when the fleet has
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
		if !m.Ready || (region != "" && m.Region != region) {
			continue
		}
		if m.Pull {
			// The fleet sees no endpoints or nodes of a pull-mode member:
			// its agent reports the addresses with the Service's status.
			if !e.informers.ForResource(worksGVR).Informer().HasSynced() && hadCopy(b, m.Name) {
				return nil, true, fmt.Errorf("the Works of member %s are not watched yet", m.Name)
			}
			addrs = append(addrs, e.reportedAddresses(m, svcKind, namespace, name)...)
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
		addrs = append(addrs, serviceAddresses(svc, unstructuredList(c.nodes.GetStore().List()))...)
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
	if c.endpointsForbidden.Load() {
		return true
	}
	slices, err := c.endpoints.GetIndexer().ByIndex(byService, svc.GetNamespace()+"/"+svc.GetName())
	if err != nil {
		return false
	}
	return servingBy(svc, unstructuredList(slices))
}

// servingBy reports whether one of a Service's EndpointSlices has a ready
// endpoint, or the Service has no selector (see serving).
func servingBy(svc *unstructured.Unstructured, slices []*unstructured.Unstructured) bool {
	if selector, _, _ := unstructured.NestedMap(svc.Object, "spec", "selector"); len(selector) == 0 {
		return true
	}
	for _, slice := range slices {
		if HasReadyEndpoint(slice) {
			return true
		}
	}
	return false
}

// HasReadyEndpoint reports whether an EndpointSlice has a ready endpoint
// (one whose readiness is unknown counts, as the API asks).
func HasReadyEndpoint(slice *unstructured.Unstructured) bool {
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
	return false
}

// ServingAddresses is what the fleet's DNS answers for one member's copy
// of a Service, from what the member holds: nothing unless a ready
// endpoint is behind it (slices are the Service's EndpointSlices;
// endpointsUnreadable: the reader may not list them, so it counts as
// serving), then its load-balancer ingress IPs, or for a NodePort or
// LoadBalancer Service without them the internal addresses of the Ready
// nodes. A pull-mode member's agent reports it; the engine computes the
// same for the members it watches.
func ServingAddresses(svc *unstructured.Unstructured, slices []*unstructured.Unstructured, endpointsUnreadable bool, nodes []*unstructured.Unstructured) []net.IP {
	if !endpointsUnreadable && !servingBy(svc, slices) {
		return nil
	}
	return serviceAddresses(svc, nodes)
}

// NeedsNodes reports whether a Service's addresses are its nodes' (a
// NodePort or LoadBalancer Service without ingress addresses).
func NeedsNodes(svc *unstructured.Unstructured) bool {
	return len(ingressIPs(svc)) == 0 && nodeService(svc)
}

// reportedAddresses are the addresses a pull-mode member's agent
// reported for its copy of a Service, if its report is of the Work's
// current generation.
func (e *Engine) reportedAddresses(m Member, svcKind Kind, namespace, name string) []net.IP {
	return addressesIn(e.cachedWork(workv1.ExecutionNamespace(m.Name), WorkName(svcKind.ID(), namespace, name)))
}

// addressesIn are the addresses the agent last reported in a Service's
// Work while its copy was applied: while a newer generation is on its
// way they still describe what the member serves.
func addressesIn(w *workv1.Work) []net.IP {
	if w == nil {
		return nil
	}
	cond := apimeta.FindStatusCondition(w.Status.Conditions, workv1.ConditionApplied)
	if cond == nil || cond.Status != metav1.ConditionTrue {
		return nil
	}
	var out []net.IP
	for _, st := range w.Status.ManifestStatuses {
		if st.Identifier.Group != "" || st.Identifier.Kind != "Service" {
			continue
		}
		for _, a := range st.Addresses {
			if ip := net.ParseIP(a); ip != nil {
				out = append(out, ip)
			}
		}
	}
	return out
}

func unstructuredList(objs []any) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out = append(out, u)
		}
	}
	return out
}

func ingressIPs(svc *unstructured.Unstructured) []net.IP {
	var out []net.IP
	ingress, _, _ := unstructured.NestedSlice(svc.Object, "status", "loadBalancer", "ingress")
	for _, in := range ingress {
		if m, ok := in.(map[string]any); ok {
			if ip := net.ParseIP(stringOf(m["ip"])); ip != nil {
				out = append(out, ip)
			}
		}
	}
	return out
}

func nodeService(svc *unstructured.Unstructured) bool {
	t, _, _ := unstructured.NestedString(svc.Object, "spec", "type")
	return t == "NodePort" || t == "LoadBalancer"
}

// serviceAddresses: the ingress IPs, else the Ready nodes' internal
// addresses for a Service that a node port serves.
func serviceAddresses(svc *unstructured.Unstructured, nodes []*unstructured.Unstructured) []net.IP {
	if out := ingressIPs(svc); len(out) > 0 {
		return out
	}
	if !nodeService(svc) {
		return nil
	}
	var out []net.IP
	for _, node := range nodes {
		out = append(out, ReadyNodeAddresses(node)...)
	}
	return out
}

// ReadyNodeAddresses are a node's InternalIPs while it is Ready: what the
// fleet's DNS answers with for node-port Services.
func ReadyNodeAddresses(node *unstructured.Unstructured) []net.IP {
	if !nodeReady(node) {
		return nil
	}
	var out []net.IP
	addresses, _, _ := unstructured.NestedSlice(node.Object, "status", "addresses")
	for _, a := range addresses {
		if m, ok := a.(map[string]any); ok && m["type"] == "InternalIP" {
			if ip := net.ParseIP(stringOf(m["address"])); ip != nil {
				out = append(out, ip)
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
