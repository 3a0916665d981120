package cloudprovider

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/servicelb"
)

func service(annotations map[string]string, mutate ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: types.UID("0a1b2c3d-0000-0000-0000-000000000001"), Annotations: annotations},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{
			{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080},
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, NodePort: 30053},
		}},
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

func node(name, ip string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}}}
}

func TestBalancerFor(t *testing.T) {
	nodes := []*corev1.Node{node("b", "10.250.0.3"), node("a", "10.250.0.2")}
	tests := []struct {
		name    string
		svc     *corev1.Service
		wantErr string
		check   func(t *testing.T, internal bool, ls []servicelb.Listener)
	}{
		{name: "defaults", svc: service(nil), check: func(t *testing.T, internal bool, ls []servicelb.Listener) {
			if internal || len(ls) != 2 {
				t.Fatalf("internal %t, listeners %+v", internal, ls)
			}
			http, dns := ls[0], ls[1]
			if http.Protocol != "TCP" || http.Port != 80 || strings.Join(http.Backends, ",") != "10.250.0.2:30080,10.250.0.3:30080" {
				t.Errorf("http listener %+v", http)
			}
			if dns.Protocol != "UDP" || dns.Backends[0] != "10.250.0.2:30053" {
				t.Errorf("dns listener %+v", dns)
			}
			// Node health: kube-proxy's /healthz on every node.
			if h := http.Health; h.Type != "http" || h.Port != 10256 || h.Path != "/healthz" || h.Interval != 2*time.Second {
				t.Errorf("health %+v", h)
			}
		}},
		{name: "all annotations", svc: service(map[string]string{
			AnnotationInternal: "true", AnnotationPoolAlgorithm: "least_connections", AnnotationAllowedCIDRs: `["192.0.2.0/24"]`,
			AnnotationHealthDelay: "5", AnnotationHealthTimeout: "3", AnnotationHealthUpThreshold: "2", AnnotationHealthDownThreshold: "4",
			AnnotationHealthType: "tcp", AnnotationTimeoutMemberConnect: "500", AnnotationTimeoutClientData: "60000",
		}), check: func(t *testing.T, internal bool, ls []servicelb.Listener) {
			l := ls[0]
			if !internal || l.Algorithm != "least_connections" || strings.Join(l.AllowedCIDRs, ",") != "192.0.2.0/24" ||
				l.Health.Type != "tcp" || l.Health.Port != 0 || l.Health.Interval != 5*time.Second || l.Health.Timeout != 3*time.Second ||
				l.Health.UpThreshold != 2 || l.Health.DownThreshold != 4 || l.ConnectTimeout != 500*time.Millisecond || l.IdleTimeout != time.Minute {
				t.Errorf("listener %+v", l)
			}
		}},
		{name: "PROXY v2 on TCP", svc: service(map[string]string{AnnotationPoolProtocol: "proxyv2"}, func(s *corev1.Service) { s.Spec.Ports = s.Spec.Ports[:1] }),
			check: func(t *testing.T, _ bool, ls []servicelb.Listener) {
				if ls[0].ProxyProtocol != 2 {
					t.Errorf("proxy protocol %d", ls[0].ProxyProtocol)
				}
			}},
		{name: "local traffic policy checks the health node port", svc: service(nil, func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy, s.Spec.HealthCheckNodePort = corev1.ServiceExternalTrafficPolicyLocal, 31999
		}), check: func(t *testing.T, _ bool, ls []servicelb.Listener) {
			if ls[0].Health.Port != 31999 {
				t.Errorf("health %+v", ls[0].Health)
			}
		}},
		{name: "source ranges", svc: service(nil, func(s *corev1.Service) { s.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/24"} }),
			check: func(t *testing.T, _ bool, ls []servicelb.Listener) {
				if strings.Join(ls[1].AllowedCIDRs, ",") != "198.51.100.0/24" {
					t.Errorf("allowed %v", ls[1].AllowedCIDRs)
				}
			}},
		{name: "unknown annotation", svc: service(map[string]string{AnnotationPrefix + "loadbalancer-flavor": "large"}),
			wantErr: "unknown annotation lb.lotse.dev/loadbalancer-flavor (known under lb.lotse.dev/: internal, loadbalancer-health-monitor-delay-s"},
		{name: "bad value", svc: service(map[string]string{AnnotationPoolProtocol: "http"}),
			wantErr: `annotation lb.lotse.dev/loadbalancer-pool-protocol="http": allowed is tcp, proxy, proxyv2`},
		{name: "bad CIDR list", svc: service(map[string]string{AnnotationAllowedCIDRs: "192.0.2.0/24"}),
			wantErr: "allowed is a JSON list of CIDRs"},
		{name: "PROXY on UDP", svc: service(map[string]string{AnnotationPoolProtocol: "proxy"}), wantErr: "TCP ports only"},
		{name: "two ways to limit clients", svc: service(map[string]string{AnnotationAllowedCIDRs: `["192.0.2.0/24"]`},
			func(s *corev1.Service) { s.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/24"} }), wantErr: "use one of them"},
		{name: "SCTP", svc: service(nil, func(s *corev1.Service) { s.Spec.Ports[0].Protocol = corev1.ProtocolSCTP }), wantErr: "protocol SCTP"},
		{name: "annotations of others are ignored", svc: service(map[string]string{"example.com/x": "y"}), check: func(*testing.T, bool, []servicelb.Listener) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			internal, ls, err := BalancerFor(tt.svc, nodes)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, internal, ls)
		})
	}
}

type fakeMachines map[string]*Machine

func (f fakeMachines) Machine(_ context.Context, _ clusterref.Ref, nodeName, _ string) (*Machine, error) {
	return f[nodeName], nil
}

type fakeLoadBalancers struct {
	ensured map[string]LoadBalancer
	deleted []string
}

func (f *fakeLoadBalancers) Ensure(_ context.Context, lb LoadBalancer) (string, error) {
	f.ensured[lb.Name] = lb
	return "10.254.254.1", nil
}
func (f *fakeLoadBalancers) Get(_ context.Context, _ clusterref.Ref, name string) (string, bool, error) {
	_, ok := f.ensured[name]
	return "10.254.254.1", ok, nil
}
func (f *fakeLoadBalancers) Delete(_ context.Context, _ clusterref.Ref, name string) error {
	f.deleted = append(f.deleted, name)
	delete(f.ensured, name)
	return nil
}
func (f *fakeLoadBalancers) DeleteCluster(context.Context, clusterref.Ref) error { return nil }

func TestCloud(t *testing.T) {
	ref := clusterref.Ref{Namespace: "default", Name: "shop"}
	lbs := &fakeLoadBalancers{ensured: map[string]LoadBalancer{}}
	cloud := &Cloud{Cluster: ref, Region: "lab", LoadBalancers: lbs, Machines: fakeMachines{
		"m1": {Name: "m1", ProviderID: ProviderID(ref, "m1"), Address: "10.250.0.2", InstanceType: "local", Zone: "a"},
		"m2": {Name: "m2", ProviderID: ProviderID(ref, "m2"), Address: "10.250.0.3", Region: "other", Shutdown: true},
	}}
	ctx := context.Background()
	inst, _ := cloud.InstancesV2()
	md, err := inst.InstanceMetadata(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "m1"}})
	if err != nil || md.ProviderID != "lotse://default/shop/m1" || md.Zone != "a" || md.Region != "lab" || md.InstanceType != "local" ||
		md.NodeAddresses[0] != (corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.250.0.2"}) {
		t.Errorf("metadata %+v, %v", md, err)
	}
	if md, _ := inst.InstanceMetadata(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "m2"}}); md.Region != "other" {
		t.Errorf("a pool's region: %+v", md)
	}
	if _, err := inst.InstanceMetadata(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gone"}}); err != cloudprovider.InstanceNotFound {
		t.Errorf("metadata of a missing machine: %v", err)
	}
	for name, want := range map[string][2]bool{"m1": {true, false}, "m2": {true, true}, "gone": {false, false}} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		exists, _ := inst.InstanceExists(ctx, n)
		shutdown, _ := inst.InstanceShutdown(ctx, n)
		if exists != want[0] || shutdown != want[1] {
			t.Errorf("%s: exists %t shutdown %t, want %v", name, exists, shutdown, want)
		}
	}

	lb, _ := cloud.LoadBalancer()
	svc := service(map[string]string{AnnotationPoolProtocol: "proxyv2"}, func(s *corev1.Service) { s.Spec.Ports = s.Spec.Ports[:1] })
	st, err := lb.EnsureLoadBalancer(ctx, "shop", svc, []*corev1.Node{node("m1", "10.250.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Ingress) != 1 || st.Ingress[0].IP != "10.254.254.1" || st.Ingress[0].IPMode == nil || *st.Ingress[0].IPMode != corev1.LoadBalancerIPModeProxy {
		t.Errorf("status %+v", st)
	}
	name := lb.GetLoadBalancerName(ctx, "shop", svc)
	if _, ok := lbs.ensured[name]; !ok || lbs.ensured[name].Cluster != ref {
		t.Errorf("balancer %s not ensured: %v", name, lbs.ensured)
	}
	if _, exists, _ := lb.GetLoadBalancer(ctx, "shop", svc); !exists {
		t.Error("GetLoadBalancer: not found")
	}
	if err := lb.EnsureLoadBalancerDeleted(ctx, "shop", svc); err != nil || len(lbs.deleted) != 1 {
		t.Errorf("delete: %v %v", err, lbs.deleted)
	}
}
