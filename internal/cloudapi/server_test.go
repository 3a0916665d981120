package cloudapi

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/lotse/lotse/internal/cloudapi/ccm/provider"
	lotsecloud "github.com/lotse/lotse/internal/cloudprovider"
	"github.com/lotse/lotse/internal/clusterref"
)

// fakeMachines knows machines by cluster and node name.
type fakeMachines map[clusterref.Ref]map[string]*lotsecloud.Machine

func (f fakeMachines) Machine(_ context.Context, cluster clusterref.Ref, nodeName, _ string) (*lotsecloud.Machine, error) {
	return f[cluster][nodeName], nil
}

// fakeLoadBalancers keeps balancers by cluster and name, with one address
// per balancer.
type fakeLoadBalancers struct {
	mu    sync.Mutex
	addrs map[clusterref.Ref]map[string]string
	next  int
}

func (f *fakeLoadBalancers) Ensure(_ context.Context, lb lotsecloud.LoadBalancer) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addrs == nil {
		f.addrs = map[clusterref.Ref]map[string]string{}
	}
	if f.addrs[lb.Cluster] == nil {
		f.addrs[lb.Cluster] = map[string]string{}
	}
	if a, ok := f.addrs[lb.Cluster][lb.Name]; ok {
		return a, nil
	}
	f.next++
	a := net.IPv4(192, 0, 2, byte(f.next)).String()
	f.addrs[lb.Cluster][lb.Name] = a
	return a, nil
}

func (f *fakeLoadBalancers) Get(_ context.Context, cluster clusterref.Ref, name string) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.addrs[cluster][name]
	return a, ok, nil
}

func (f *fakeLoadBalancers) Delete(_ context.Context, cluster clusterref.Ref, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.addrs[cluster], name)
	return nil
}

func (f *fakeLoadBalancers) DeleteCluster(_ context.Context, cluster clusterref.Ref) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.addrs, cluster)
	return nil
}

// cloudConfig writes the cluster's client certificate from issuer into a
// new directory and returns the cloud config a cloud controller manager
// of that cluster gets, trusting server's CA.
func cloudConfig(t *testing.T, issuer, server *Credentials, url string, cluster clusterref.Ref, uid string) provider.Config {
	t.Helper()
	cert, key, err := issuer.IssueClient(cluster, uid)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"cloud.crt": cert, "cloud.key": key} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return provider.Config{Server: url, CAFile: server.CAFile(), CertFile: filepath.Join(dir, "cloud.crt"), KeyFile: filepath.Join(dir, "cloud.key")}
}

// clientFor returns the provider a cloud controller manager would make
// from cloudConfig's config.
func clientFor(t *testing.T, issuer, server *Credentials, url string, cluster clusterref.Ref, uid string) *provider.Cloud {
	t.Helper()
	c, err := provider.New(cloudConfig(t, issuer, server, url, cluster, uid))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func lbService(name string, annotations map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name), Annotations: annotations},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080}}},
	}
}

// TestCloudAPI: a cloud controller manager's provider, over mutual TLS,
// sees its own cluster's machines and balancers and nothing of another's;
// a cluster not registered and a certificate of another CA are refused.
func TestCloudAPI(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := clusterref.Ref{Namespace: "team", Name: "a"}
	b := clusterref.Ref{Namespace: "team", Name: "b"}
	srv := &Server{
		Machines: fakeMachines{a: {
			"a-w-0": {Name: "a-w-0", ProviderID: "lotse://team/a/a-w-0", Address: "10.250.0.2", InstanceType: "small", Zone: "lab-1"},
			"a-w-1": {Name: "a-w-1", ProviderID: "lotse://team/a/a-w-1", Address: "10.250.0.3", Region: "far", Zone: "far-2", Shutdown: true},
		}},
		LoadBalancers: &fakeLoadBalancers{},
	}
	srv.Register(a, "uid-a", "lab")
	srv.Register(b, "uid-b", "lab")
	creds, err := EnsureCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	url, err := srv.Serve(ctx, creds, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca := clientFor(t, creds, creds, url, a, "uid-a")
	cb := clientFor(t, creds, creds, url, b, "uid-b")
	instA, _ := ca.InstancesV2()
	node := func(name string) *corev1.Node { return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}} }

	t.Run("instances", func(t *testing.T) {
		md, err := instA.InstanceMetadata(ctx, node("a-w-0"))
		if err != nil {
			t.Fatal(err)
		}
		want := cloudprovider.InstanceMetadata{ProviderID: "lotse://team/a/a-w-0", InstanceType: "small", Zone: "lab-1", Region: "lab",
			NodeAddresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.250.0.2"}, {Type: corev1.NodeHostName, Address: "a-w-0"}}}
		if md.ProviderID != want.ProviderID || md.InstanceType != want.InstanceType || md.Zone != want.Zone || md.Region != want.Region ||
			len(md.NodeAddresses) != 2 || md.NodeAddresses[0] != want.NodeAddresses[0] || md.NodeAddresses[1] != want.NodeAddresses[1] {
			t.Errorf("metadata %+v, want %+v", *md, want)
		}
		for _, tc := range []struct {
			node             string
			exists, shutdown bool
			region           string
		}{
			{"a-w-0", true, false, "lab"},
			{"a-w-1", true, true, "far"},
			{"gone", false, false, ""},
		} {
			exists, err := instA.InstanceExists(ctx, node(tc.node))
			if err != nil || exists != tc.exists {
				t.Errorf("%s: exists %v (%v), want %v", tc.node, exists, err, tc.exists)
			}
			shutdown, err := instA.InstanceShutdown(ctx, node(tc.node))
			if err != nil || shutdown != tc.shutdown {
				t.Errorf("%s: shutdown %v (%v), want %v", tc.node, shutdown, err, tc.shutdown)
			}
			md, err := instA.InstanceMetadata(ctx, node(tc.node))
			if !tc.exists {
				if !errors.Is(err, cloudprovider.InstanceNotFound) {
					t.Errorf("%s: metadata error %v, want InstanceNotFound", tc.node, err)
				}
				continue
			}
			if err != nil || md.Region != tc.region {
				t.Errorf("%s: region %+v (%v), want %s", tc.node, md, err, tc.region)
			}
		}
		// b has no machines, not even a's.
		instB, _ := cb.InstancesV2()
		if exists, err := instB.InstanceExists(ctx, node("a-w-0")); err != nil || exists {
			t.Errorf("b sees a's machine: %v, %v", exists, err)
		}
	})

	t.Run("load balancers", func(t *testing.T) {
		lbA, _ := ca.LoadBalancer()
		lbB, _ := cb.LoadBalancer()
		svc := lbService("web", nil)
		nodes := []*corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "a-w-0"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.250.0.2"}}}}}
		st, err := lbA.EnsureLoadBalancer(ctx, "a", svc, nodes)
		if err != nil || len(st.Ingress) != 1 || net.ParseIP(st.Ingress[0].IP) == nil {
			t.Fatalf("ensure: %+v, %v", st, err)
		}
		got, exists, err := lbA.GetLoadBalancer(ctx, "a", svc)
		if err != nil || !exists || got.Ingress[0].IP != st.Ingress[0].IP {
			t.Errorf("get: %+v %v %v", got, exists, err)
		}
		if _, exists, err := lbB.GetLoadBalancer(ctx, "b", svc); err != nil || exists {
			t.Errorf("b sees a's balancer: %v %v", exists, err)
		}
		// The manager's rules answer: a bad annotation is named.
		_, err = lbA.EnsureLoadBalancer(ctx, "a", lbService("bad", map[string]string{lotsecloud.AnnotationPoolProtocol: "udp"}), nodes)
		if err == nil || !strings.Contains(err.Error(), lotsecloud.AnnotationPoolProtocol) {
			t.Errorf("bad annotation: %v", err)
		}
		if err := lbA.EnsureLoadBalancerDeleted(ctx, "a", svc); err != nil {
			t.Fatal(err)
		}
		if _, exists, err := lbA.GetLoadBalancer(ctx, "a", svc); err != nil || exists {
			t.Errorf("after delete: %v %v", exists, err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		// Registered no more: its certificate is refused with a reason.
		srv.Unregister(b)
		instB, _ := cb.InstancesV2()
		if _, err := instB.InstanceExists(ctx, node("x")); err == nil || !strings.Contains(err.Error(), "not served") {
			t.Errorf("unregistered cluster: %v", err)
		}
		// A certificate of an earlier cluster of the same name (another
		// UID) is refused.
		former := clientFor(t, creds, creds, url, a, "uid-old")
		instF, _ := former.InstancesV2()
		if _, err := instF.InstanceExists(ctx, node("a-w-0")); err == nil || !strings.Contains(err.Error(), "not served") {
			t.Errorf("a former cluster's certificate: %v", err)
		}
		// A certificate of another CA does not get through the handshake.
		other, err := EnsureCredentials(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		stranger := clientFor(t, other, creds, url, a, "uid-a")
		instS, _ := stranger.InstancesV2()
		if _, err := instS.InstanceExists(ctx, node("a-w-0")); err == nil {
			t.Error("a certificate of another CA was accepted")
		}
	})
}
