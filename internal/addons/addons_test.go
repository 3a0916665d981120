package addons

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
)

func testTunnel() *Tunnel {
	return &Tunnel{Image: "registry.lotse.local/konnectivity-agent:v0.34.0", Host: "10.250.0.1", Port: 24000, Servers: 2,
		CA: []byte("ca"), Cert: []byte("cert"), Key: []byte("key")}
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func TestRender(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		wantKinds map[string]string // kind -> name that must be there
		absent    map[string]string
		wantErr   string
	}{
		{
			name:      "CoreDNS only",
			cfg:       Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "registry.lotse.local/coredns:v1.14.2"},
			wantKinds: map[string]string{"Deployment": "coredns", "Service": "kube-dns", "ConfigMap": "coredns"},
			absent:    map[string]string{"DaemonSet": TunnelAgentName, "Secret": TunnelAgentName},
		},
		{
			name:      "with the tunnel agents",
			cfg:       Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x", Tunnel: testTunnel()},
			wantKinds: map[string]string{"Deployment": "coredns", "DaemonSet": TunnelAgentName, "Secret": TunnelAgentName, "ServiceAccount": TunnelAgentName},
		},
		{
			name:    "tunnel without credentials",
			cfg:     Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x", Tunnel: &Tunnel{Image: "x", Host: "h", Port: 1, Servers: 1}},
			wantErr: "credentials",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Render(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Render: %v, want an error about %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for kind, name := range tt.wantKinds {
				if find(objs, kind, name) == nil {
					t.Errorf("no %s %s rendered", kind, name)
				}
			}
			for kind, name := range tt.absent {
				if find(objs, kind, name) != nil {
					t.Errorf("%s %s rendered, want none", kind, name)
				}
			}
		})
	}
}

func TestRenderTunnelAgent(t *testing.T) {
	objs, err := Render(Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x", Tunnel: testTunnel()})
	if err != nil {
		t.Fatal(err)
	}
	ds := find(objs, "DaemonSet", TunnelAgentName)
	containers, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("%d containers", len(containers))
	}
	args := strings.Join(toStrings(containers[0].(map[string]any)["args"]), " ")
	for _, want := range []string{"--proxy-server-host=10.250.0.1", "--proxy-server-port=24000", "--agent-cert=", "--ca-cert=", "--sync-forever=true"} {
		if !strings.Contains(args, want) {
			t.Errorf("agent args %q lack %q", args, want)
		}
	}
	if hn, _, _ := unstructured.NestedBool(ds.Object, "spec", "template", "spec", "hostNetwork"); !hn {
		t.Error("the agent must run on the node's network")
	}
	secret := find(objs, "Secret", TunnelAgentName)
	if data, _, _ := unstructured.NestedString(secret.Object, "data", "tls.key"); data != "a2V5" { // base64("key")
		t.Errorf("secret tls.key = %q", data)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestHealth(t *testing.T) {
	available := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"},
		Status: appsv1.DeploymentStatus{AvailableReplicas: 1, Replicas: 1, Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: "True"}}}}
	agents := func(desired, ready int32) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: TunnelAgentName, Namespace: "kube-system", Generation: 1},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: 1, DesiredNumberScheduled: desired, NumberReady: ready, UpdatedNumberScheduled: desired}}
	}
	tests := []struct {
		name       string
		objs       []any
		withTunnel bool
		want       bool
		wantMsg    string
	}{
		{"no CoreDNS", nil, false, false, "CoreDNS deployment missing"},
		{"CoreDNS available", []any{available}, false, true, "CoreDNS available"},
		{"agents missing", []any{available}, true, false, "konnectivity-agent daemonset missing"},
		{"agent not connected", []any{available, agents(2, 1)}, true, false, "1/2 agents connected to the tunnel"},
		{"all connected", []any{available, agents(2, 2)}, true, true, "2/2 agents connected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset()
			for _, o := range tt.objs {
				switch o := o.(type) {
				case *appsv1.Deployment:
					_, _ = cs.AppsV1().Deployments("kube-system").Create(context.Background(), o, metav1.CreateOptions{})
				case *appsv1.DaemonSet:
					_, _ = cs.AppsV1().DaemonSets("kube-system").Create(context.Background(), o, metav1.CreateOptions{})
				}
			}
			ok, msg, err := Health(context.Background(), cs, tt.withTunnel)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.want || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("Health = %t %q, want %t and %q", ok, msg, tt.want, tt.wantMsg)
			}
		})
	}
}
