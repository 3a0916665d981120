package cloudprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/lotse/lotse/internal/servicelb"
)

// AnnotationPrefix is where the balancer's annotations live, modelled on
// cloudscale's (k8s.cloudscale.ch/loadbalancer-...).
const AnnotationPrefix = "lb.lotse.dev/"

// The annotations of a LoadBalancer Service.
const (
	// AnnotationInternal "true": an address on the cluster's node network
	// instead of the public pool.
	AnnotationInternal = AnnotationPrefix + "internal"
	// AnnotationPoolProtocol: "tcp" (default), "proxy" (PROXY protocol v1)
	// or "proxyv2".
	AnnotationPoolProtocol = AnnotationPrefix + "loadbalancer-pool-protocol"
	// AnnotationPoolAlgorithm: round_robin (default), least_connections,
	// source_ip.
	AnnotationPoolAlgorithm = AnnotationPrefix + "loadbalancer-pool-algorithm"
	// AnnotationAllowedCIDRs: a JSON list of the client ranges allowed,
	// e.g. ["192.0.2.0/24"] (or spec.loadBalancerSourceRanges).
	AnnotationAllowedCIDRs = AnnotationPrefix + "loadbalancer-listener-allowed-cidrs"
	// Health monitor of the backends.
	AnnotationHealthDelay         = AnnotationPrefix + "loadbalancer-health-monitor-delay-s"
	AnnotationHealthTimeout       = AnnotationPrefix + "loadbalancer-health-monitor-timeout-s"
	AnnotationHealthUpThreshold   = AnnotationPrefix + "loadbalancer-health-monitor-up-threshold"
	AnnotationHealthDownThreshold = AnnotationPrefix + "loadbalancer-health-monitor-down-threshold"
	AnnotationHealthType          = AnnotationPrefix + "loadbalancer-health-monitor-type"
	AnnotationHealthHTTPPath      = AnnotationPrefix + "loadbalancer-health-monitor-http-path"
	// Timeouts: connecting to a backend, and a UDP flow's idle time.
	AnnotationTimeoutMemberConnect = AnnotationPrefix + "loadbalancer-timeout-member-connect-ms"
	AnnotationTimeoutClientData    = AnnotationPrefix + "loadbalancer-timeout-client-data-ms"
)

// kubeProxyHealthPort is where kube-proxy answers /healthz on every node:
// the node-level health check of a balancer's backends.
const kubeProxyHealthPort = 10256

type annotationRule struct {
	allowed string
	check   func(string) error
}

func oneOf(values ...string) annotationRule {
	return annotationRule{allowed: strings.Join(values, ", "), check: func(v string) error {
		for _, x := range values {
			if v == x {
				return nil
			}
		}
		return errors.New("not allowed")
	}}
}

func intRange(lo, hi int) annotationRule {
	return annotationRule{allowed: fmt.Sprintf("an integer from %d to %d", lo, hi), check: func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return errors.New("out of range")
		}
		return nil
	}}
}

var annotationRules = map[string]annotationRule{
	AnnotationInternal:            oneOf("true", "false"),
	AnnotationPoolProtocol:        oneOf("tcp", "proxy", "proxyv2"),
	AnnotationPoolAlgorithm:       oneOf(servicelb.RoundRobin, servicelb.LeastConnections, servicelb.SourceIP),
	AnnotationHealthDelay:         intRange(1, 3600),
	AnnotationHealthTimeout:       intRange(1, 3600),
	AnnotationHealthUpThreshold:   intRange(1, 10),
	AnnotationHealthDownThreshold: intRange(1, 10),
	AnnotationHealthType:          oneOf("tcp", "http"),
	AnnotationHealthHTTPPath: {allowed: "an absolute URL path, e.g. /healthz", check: func(v string) error {
		if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, " \t\r\n") {
			return errors.New("not a path")
		}
		return nil
	}},
	AnnotationTimeoutMemberConnect: intRange(1, 600000),
	AnnotationTimeoutClientData:    intRange(1, 86400000),
	AnnotationAllowedCIDRs: {allowed: `a JSON list of CIDRs, e.g. ["192.0.2.0/24"]`, check: func(v string) error {
		_, err := parseCIDRList(v)
		return err
	}},
}

func parseCIDRList(v string) ([]string, error) {
	var cidrs []string
	if err := json.Unmarshal([]byte(v), &cidrs); err != nil {
		return nil, err
	}
	for _, c := range cidrs {
		if _, err := netip.ParsePrefix(c); err != nil {
			return nil, err
		}
	}
	return cidrs, nil
}

// ValidateAnnotations names every unknown or malformed lb.lotse.dev/
// annotation with the values it allows.
func ValidateAnnotations(annotations map[string]string) error {
	var problems []string
	keys := make([]string, 0, len(annotations))
	for k := range annotations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !strings.HasPrefix(k, AnnotationPrefix) {
			continue
		}
		rule, ok := annotationRules[k]
		if !ok {
			known := make([]string, 0, len(annotationRules))
			for name := range annotationRules {
				known = append(known, strings.TrimPrefix(name, AnnotationPrefix))
			}
			sort.Strings(known)
			problems = append(problems, fmt.Sprintf("unknown annotation %s (known under %s: %s)", k, AnnotationPrefix, strings.Join(known, ", ")))
			continue
		}
		if err := rule.check(annotations[k]); err != nil {
			problems = append(problems, fmt.Sprintf("annotation %s=%q: allowed is %s", k, annotations[k], rule.allowed))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// BalancerFor turns a Service and the nodes to send to into a balancer:
// one listener per port, to the port's node port on every node.
func BalancerFor(service *corev1.Service, nodes []*corev1.Node) (internal bool, listeners []servicelb.Listener, err error) {
	a := service.Annotations
	if err := ValidateAnnotations(a); err != nil {
		return false, nil, err
	}
	if len(service.Spec.LoadBalancerSourceRanges) > 0 && a[AnnotationAllowedCIDRs] != "" {
		return false, nil, fmt.Errorf("both spec.loadBalancerSourceRanges and %s are set; use one of them", AnnotationAllowedCIDRs)
	}
	allowed := service.Spec.LoadBalancerSourceRanges
	if v := a[AnnotationAllowedCIDRs]; v != "" {
		allowed, _ = parseCIDRList(v)
	}
	for _, c := range allowed {
		if _, err := netip.ParsePrefix(strings.TrimSpace(c)); err != nil {
			return false, nil, fmt.Errorf("spec.loadBalancerSourceRanges: %q is not a CIDR", c)
		}
	}
	proxy := map[string]int{"": 0, "tcp": 0, "proxy": 1, "proxyv2": 2}[a[AnnotationPoolProtocol]]
	atoi := func(k string, def int) int {
		if n, err := strconv.Atoi(a[k]); err == nil {
			return n
		}
		return def
	}
	health := servicelb.HealthCheck{
		Type:          "http",
		Port:          kubeProxyHealthPort,
		Path:          "/healthz",
		Interval:      time.Duration(atoi(AnnotationHealthDelay, 2)) * time.Second,
		Timeout:       time.Duration(atoi(AnnotationHealthTimeout, 1)) * time.Second,
		UpThreshold:   atoi(AnnotationHealthUpThreshold, 1),
		DownThreshold: atoi(AnnotationHealthDownThreshold, 2),
	}
	if service.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal && service.Spec.HealthCheckNodePort != 0 {
		// Only nodes with a ready endpoint answer here (kube-proxy).
		health.Port = int(service.Spec.HealthCheckNodePort)
	}
	switch a[AnnotationHealthType] {
	case "tcp":
		health.Type, health.Port, health.Path = "tcp", 0, ""
	case "http":
		if p := a[AnnotationHealthHTTPPath]; p != "" {
			health.Path = p
		}
	}
	var addresses []string
	for _, n := range nodes {
		for _, addr := range n.Status.Addresses {
			if addr.Type == corev1.NodeInternalIP {
				addresses = append(addresses, addr.Address)
				break
			}
		}
	}
	sort.Strings(addresses)
	for _, p := range service.Spec.Ports {
		if p.Protocol != corev1.ProtocolTCP && p.Protocol != corev1.ProtocolUDP {
			return false, nil, fmt.Errorf("port %s: protocol %s; the balancer serves TCP and UDP", p.Name, p.Protocol)
		}
		if p.Protocol == corev1.ProtocolUDP && proxy != 0 {
			return false, nil, fmt.Errorf("port %s: the PROXY protocol (%s) is for TCP ports only", p.Name, AnnotationPoolProtocol)
		}
		if p.NodePort == 0 {
			return false, nil, fmt.Errorf("port %s has no node port yet", p.Name)
		}
		l := servicelb.Listener{
			Name: p.Name, Protocol: string(p.Protocol), Port: int(p.Port),
			AllowedCIDRs: allowed, ProxyProtocol: proxy, Algorithm: a[AnnotationPoolAlgorithm], Health: health,
			ConnectTimeout: time.Duration(atoi(AnnotationTimeoutMemberConnect, 2000)) * time.Millisecond,
			IdleTimeout:    time.Duration(atoi(AnnotationTimeoutClientData, 30000)) * time.Millisecond,
		}
		for _, addr := range addresses {
			l.Backends = append(l.Backends, net.JoinHostPort(addr, strconv.Itoa(int(p.NodePort))))
		}
		listeners = append(listeners, l)
	}
	return a[AnnotationInternal] == "true", listeners, nil
}

type loadBalancers struct{ cloud *Cloud }

func (l *loadBalancers) status(address string, service *corev1.Service) *corev1.LoadBalancerStatus {
	ingress := corev1.LoadBalancerIngress{IP: address}
	mode := corev1.LoadBalancerIPModeVIP
	if p := service.Annotations[AnnotationPoolProtocol]; p == "proxy" || p == "proxyv2" {
		// Traffic must go through the balancer (kube-proxy must not
		// short-cut it), or the PROXY header would be missing.
		mode = corev1.LoadBalancerIPModeProxy
	}
	ingress.IPMode = &mode
	return &corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{ingress}}
}

// GetLoadBalancer returns the balancer's status, if it exists.
func (l *loadBalancers) GetLoadBalancer(ctx context.Context, clusterName string, service *corev1.Service) (*corev1.LoadBalancerStatus, bool, error) {
	address, ok, err := l.cloud.LoadBalancers.Get(ctx, l.cloud.Cluster, l.GetLoadBalancerName(ctx, clusterName, service))
	if err != nil || !ok {
		return nil, ok, err
	}
	return l.status(address, service), true, nil
}

// GetLoadBalancerName is cloud-provider's name for the Service.
func (l *loadBalancers) GetLoadBalancerName(_ context.Context, _ string, service *corev1.Service) string {
	return cloudprovider.DefaultLoadBalancerName(service)
}

// EnsureLoadBalancer creates or updates the Service's balancer.
func (l *loadBalancers) EnsureLoadBalancer(ctx context.Context, clusterName string, service *corev1.Service, nodes []*corev1.Node) (*corev1.LoadBalancerStatus, error) {
	internal, listeners, err := BalancerFor(service, nodes)
	if err != nil {
		return nil, err
	}
	address, err := l.cloud.LoadBalancers.Ensure(ctx, LoadBalancer{
		Cluster: l.cloud.Cluster, Name: l.GetLoadBalancerName(ctx, clusterName, service), Internal: internal, Listeners: listeners,
	})
	if err != nil {
		return nil, err
	}
	return l.status(address, service), nil
}

// UpdateLoadBalancer applies changed nodes (and everything else) in place.
func (l *loadBalancers) UpdateLoadBalancer(ctx context.Context, clusterName string, service *corev1.Service, nodes []*corev1.Node) error {
	_, err := l.EnsureLoadBalancer(ctx, clusterName, service, nodes)
	return err
}

// EnsureLoadBalancerDeleted removes the balancer and releases its address.
func (l *loadBalancers) EnsureLoadBalancerDeleted(ctx context.Context, clusterName string, service *corev1.Service) error {
	return l.cloud.LoadBalancers.Delete(ctx, l.cloud.Cluster, l.GetLoadBalancerName(ctx, clusterName, service))
}
