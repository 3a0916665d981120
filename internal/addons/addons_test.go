package addons

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

func testTunnel() *Tunnel {
	return &Tunnel{Image: "registry.lotse.local/konnectivity-agent:v0.34.0", Host: "10.250.0.1", Port: 24000, Servers: 2,
		CA: []byte("ca"), Cert: []byte("cert"), Key: []byte("key")}
}

func find(set []Addon, kind, name string) *unstructured.Unstructured {
	for _, a := range set {
		for _, o := range a.Objects {
			if o.GetKind() == kind && o.GetName() == name {
				return o
			}
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
		{
			name:      "bridge: nothing in the cluster, kube-router enforces policies",
			cfg:       podNetworkConfig(testNetwork("bridge")),
			wantKinds: map[string]string{"DaemonSet": NetworkPolicyAgentName},
			absent:    map[string]string{"DaemonSet": "cilium", "Deployment": "calico-kube-controllers"},
		},
		{
			name:      "no network given is the bridge",
			cfg:       podNetworkConfig(nil),
			wantKinds: map[string]string{"DaemonSet": NetworkPolicyAgentName},
		},
		{
			name: "cilium",
			cfg:  podNetworkConfig(testNetwork("cilium")),
			wantKinds: map[string]string{"DaemonSet": "cilium", "Deployment": "cilium-operator", "ConfigMap": "cilium-config",
				"ClusterRole": "cilium", "Namespace": "cilium-secrets"},
			absent: map[string]string{"DaemonSet": NetworkPolicyAgentName},
		},
		{
			name: "calico",
			cfg:  podNetworkConfig(testNetwork("calico")),
			wantKinds: map[string]string{"DaemonSet": "calico-node", "Deployment": "calico-kube-controllers", "ConfigMap": "kubernetes-services-endpoint",
				"CustomResourceDefinition": "ippools.crd.projectcalico.org"},
			absent: map[string]string{"DaemonSet": NetworkPolicyAgentName},
		},
		{
			name:    "unknown plugin",
			cfg:     podNetworkConfig(testNetwork("flannel")),
			wantErr: `unknown network plugin "flannel"`,
		},
		{
			name:    "cilium without the API server",
			cfg:     podNetworkConfig(&Network{Plugin: "cilium", PodCIDR: "10.244.0.0/16"}),
			wantErr: "API server",
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

func testNetwork(plugin string) *Network {
	return &Network{Plugin: plugin, PodCIDR: "10.244.0.0/16", APIServerHost: "10.250.3.1", APIServerPort: 24001}
}

func podNetworkConfig(n *Network) Config {
	return Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x", NetworkPolicies: testPolicies(), Network: n}
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

func TestRenderedObjectsAreLabelledAndClean(t *testing.T) {
	set, err := Render(Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x", Tunnel: testTunnel()})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range set {
		for _, o := range a.Objects {
			if o.GetLabels()[LabelAddon] != a.Name || o.GetLabels()[LabelManagedBy] != FieldManager {
				t.Errorf("%s %s: labels %v", o.GetKind(), o.GetName(), o.GetLabels())
			}
			if _, ok := o.Object["status"]; ok {
				t.Errorf("%s %s carries a status", o.GetKind(), o.GetName())
			}
			if _, ok := o.Object["metadata"].(map[string]any)["creationTimestamp"]; ok {
				t.Errorf("%s %s carries a creationTimestamp", o.GetKind(), o.GetName())
			}
		}
	}
	cm := find(set, "ConfigMap", CoreDNSName)
	if corefile, _, _ := unstructured.NestedString(cm.Object, "data", "Corefile"); strings.Contains(corefile, "forward") {
		t.Errorf("CoreDNS forwards without upstreams:\n%s", corefile)
	}
	set, _ = Render(Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x", Upstreams: []string{"192.0.2.53"}})
	cm = find(set, "ConfigMap", CoreDNSName)
	if corefile, _, _ := unstructured.NestedString(cm.Object, "data", "Corefile"); !strings.Contains(corefile, "forward . 192.0.2.53") {
		t.Errorf("CoreDNS does not forward to the upstream:\n%s", corefile)
	}
}

func TestWorkloadHealth(t *testing.T) {
	deployment := func(available bool, ready int32) *unstructured.Unstructured {
		d := &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}, ObjectMeta: metav1.ObjectMeta{Name: "coredns", Generation: 1},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 1, AvailableReplicas: ready, ReadyReplicas: ready, Replicas: 2}}
		if available {
			d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: "True"}}
		}
		return mustUnstructured(t, d)
	}
	agents := func(desired, ready, updated int32) *unstructured.Unstructured {
		return mustUnstructured(t, &appsv1.DaemonSet{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"}, ObjectMeta: metav1.ObjectMeta{Name: TunnelAgentName, Generation: 1},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: 1, DesiredNumberScheduled: desired, NumberReady: ready, UpdatedNumberScheduled: updated}})
	}
	tests := []struct {
		name    string
		obj     *unstructured.Unstructured
		want    bool
		wantMsg string
	}{
		{"deployment available", deployment(true, 1), true, "deployment coredns available (1/1)"},
		{"deployment not available", deployment(false, 0), false, "not available yet (0/1 ready)"},
		{"daemonset not rolled out", agents(2, 2, 1), false, "1/2 pods ready and updated"},
		{"daemonset ready", agents(2, 2, 2), true, "2/2 pods ready"},
		{"daemonset without nodes", agents(0, 0, 0), false, "0/0"},
		{"APIService available", &unstructured.Unstructured{Object: map[string]any{"kind": "APIService", "metadata": map[string]any{"name": "v1beta1.metrics.k8s.io"},
			"status": map[string]any{"conditions": []any{map[string]any{"type": "Available", "status": "True"}}}}}, true, "available"},
		{"APIService failing", &unstructured.Unstructured{Object: map[string]any{"kind": "APIService", "metadata": map[string]any{"name": "v1beta1.metrics.k8s.io"},
			"status": map[string]any{"conditions": []any{map[string]any{"type": "Available", "status": "False", "message": "no endpoints"}}}}}, false, "no endpoints"},
		{"other kinds exist", mustUnstructured(t, &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}}), true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, msg, err := WorkloadHealth(tt.obj)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.want || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("WorkloadHealth = %t %q, want %t and %q", ok, msg, tt.want, tt.wantMsg)
			}
		})
	}
}

func mustUnstructured(t *testing.T, o runtime.Object) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

func testPolicies() *NetworkPolicies {
	return &NetworkPolicies{AgentImage: "registry.lotse.local/kube-router:v2.1.0", ServiceCIDR: "10.96.0.0/16",
		NodesCIDR: "10.250.3.0/24", APIServer: "10.250.3.1", APIPort: 24001}
}

func TestRenderNetworkPolicies(t *testing.T) {
	withTenants := testPolicies()
	withTenants.DefaultDenyTenantNamespaces, withTenants.TenantNamespaces = true, []string{"shop", "blog"}
	badNodes := testPolicies()
	badNodes.NodesCIDR = "nodes"
	tests := []struct {
		name      string
		cfg       Config
		present   []string // "namespace/name" of NetworkPolicies
		absent    []string
		wantErr   string
		checkSpec func(t *testing.T, set []Addon)
	}{
		{
			name:    "kube-system protected, tenants untouched",
			cfg:     Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x", NetworkPolicies: testPolicies()},
			present: []string{"kube-system/deny-all", "kube-system/allow-dns", "kube-system/allow-to-apiserver", "kube-system/allow-to-dns"},
			absent:  []string{"kube-system/allow-dns-upstreams", "shop/deny-all"},
			checkSpec: func(t *testing.T, set []Addon) {
				api := find(set, "NetworkPolicy", "allow-to-apiserver")
				to, _, _ := unstructured.NestedSlice(api.Object, "spec", "egress")
				if got := fmt.Sprint(to); !strings.Contains(got, "10.250.3.1/32") || !strings.Contains(got, "24001") {
					t.Errorf("allow-to-apiserver egress %s", got)
				}
				dns := find(set, "NetworkPolicy", "allow-dns")
				from, _, _ := unstructured.NestedSlice(dns.Object, "spec", "ingress")
				if got := fmt.Sprint(from); !strings.Contains(got, "namespaceSelector:map[]") || !strings.Contains(got, "10.250.3.0/24") {
					t.Errorf("allow-dns ingress %s", got)
				}
				ds := find(set, "DaemonSet", NetworkPolicyAgentName)
				args, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "containers")
				if got := fmt.Sprint(args); !strings.Contains(got, "--run-firewall=true") || !strings.Contains(got, "--run-router=false") ||
					!strings.Contains(got, "--service-cluster-ip-range=10.96.0.0/16") {
					t.Errorf("agent container %s", got)
				}
				coredns := find(set, "Deployment", CoreDNSName)
				labels, _, _ := unstructured.NestedStringMap(coredns.Object, "spec", "template", "metadata", "labels")
				if labels[LabelToAPIServer] != "allowed" || labels["k8s-app"] != "kube-dns" {
					t.Errorf("CoreDNS pod labels %v", labels)
				}
			},
		},
		{
			name:    "tenant namespaces denied on request",
			cfg:     Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x", NetworkPolicies: withTenants},
			present: []string{"shop/deny-all", "shop/allow-to-dns", "blog/deny-all", "blog/allow-to-dns", "kube-system/deny-all"},
		},
		{
			name:    "upstream resolvers allowed for CoreDNS",
			cfg:     Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x", Upstreams: []string{"192.0.2.53"}, NetworkPolicies: testPolicies()},
			present: []string{"kube-system/allow-dns-upstreams"},
		},
		{
			name:    "a bad nodes range",
			cfg:     Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x", NetworkPolicies: badNodes},
			wantErr: `nodes range "nodes"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := Render(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Render: %v, want an error about %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			policies := map[string]bool{}
			for _, a := range set {
				for _, o := range a.Objects {
					if o.GetKind() == "NetworkPolicy" {
						policies[o.GetNamespace()+"/"+o.GetName()] = true
					}
				}
			}
			for _, p := range tt.present {
				if !policies[p] {
					t.Errorf("no NetworkPolicy %s (have %v)", p, policies)
				}
			}
			for _, p := range tt.absent {
				if policies[p] {
					t.Errorf("NetworkPolicy %s rendered, want none", p)
				}
			}
			if tt.checkSpec != nil {
				tt.checkSpec(t, set)
			}
		})
	}
}

func TestRenderStorage(t *testing.T) {
	cfg := Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x", Storage: &Storage{ProvisionerImage: "p", HelperImage: "h",
		NodePaths: map[string]string{"node-b": "/m/b/local-volumes", "node-a": "/m/a/local-volumes"}}}
	set, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sc := find(set, "StorageClass", StorageClassName)
	if sc == nil || sc.GetAnnotations()["storageclass.kubernetes.io/is-default-class"] != "true" ||
		sc.Object["volumeBindingMode"] != "WaitForFirstConsumer" || sc.Object["reclaimPolicy"] != "Delete" {
		t.Fatalf("storage class %v", sc)
	}
	cm := find(set, "ConfigMap", StorageName)
	conf, _, _ := unstructured.NestedString(cm.Object, "data", "config.json")
	a, b := strings.Index(conf, `"node-a"`), strings.Index(conf, `"node-b"`)
	if a < 0 || b < a || !strings.Contains(conf, "/m/a/local-volumes") || !strings.Contains(conf, DefaultLocalVolumesPath) {
		t.Errorf("config.json (nodes sorted, each with its path, and a default):\n%s", conf)
	}
	dep := find(set, "Deployment", StorageName)
	sum1, _, _ := unstructured.NestedString(dep.Object, "spec", "template", "metadata", "annotations", "lotse.dev/config-checksum")

	cfg.Storage.NodePaths["node-c"] = "/m/c/local-volumes"
	set, _ = Render(cfg)
	sum2, _, _ := unstructured.NestedString(find(set, "Deployment", StorageName).Object, "spec", "template", "metadata", "annotations", "lotse.dev/config-checksum")
	if sum1 == "" || sum1 == sum2 {
		t.Errorf("the config checksum does not follow the nodes: %q -> %q", sum1, sum2)
	}

	cfg.Storage.NodePaths["node-d"] = "relative"
	if _, err := Render(cfg); err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Errorf("a relative volumes path: %v", err)
	}
}

func TestRenderMetrics(t *testing.T) {
	cfg := Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x",
		Metrics: &Metrics{Image: "m", CA: []byte("ca"), Cert: []byte("cert"), Key: []byte("key"), NodesCIDR: "10.250.3.0/24"}}
	set, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	api := find(set, "APIService", "v1beta1.metrics.k8s.io")
	if api == nil {
		t.Fatal("no APIService")
	}
	if skip, _, _ := unstructured.NestedBool(api.Object, "spec", "insecureSkipTLSVerify"); skip {
		t.Error("the API server must verify metrics-server")
	}
	if ca, _, _ := unstructured.NestedString(api.Object, "spec", "caBundle"); ca != "Y2E=" { // base64("ca")
		t.Errorf("caBundle %q", ca)
	}
	policy := find(set, "NetworkPolicy", "allow-metrics-server")
	if got := fmt.Sprint(policy.Object["spec"]); !strings.Contains(got, "10.250.3.0/24") || !strings.Contains(got, "10250") {
		t.Errorf("allow-metrics-server %s", got)
	}
	dep := find(set, "Deployment", MetricsServerName)
	if got := fmt.Sprint(dep.Object["spec"]); !strings.Contains(got, "--kubelet-certificate-authority=") || strings.Contains(got, "insecure") {
		t.Errorf("metrics-server must verify the kubelets: %s", got)
	}

	cfg.Metrics.Cert = nil
	if _, err := Render(cfg); err == nil || !strings.Contains(err.Error(), "serving certificate") {
		t.Errorf("without a certificate: %v", err)
	}
}

// The cluster's own values reach the plugins and no placeholder is left.
func TestPodNetworkValues(t *testing.T) {
	for _, plugin := range []string{PluginCilium, PluginCalico} {
		t.Run(plugin, func(t *testing.T) {
			set, err := Render(Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x",
				Network: &Network{Plugin: plugin, PodCIDR: "10.123.0.0/16", APIServerHost: "10.250.3.1", APIServerPort: 24001}})
			if err != nil {
				t.Fatal(err)
			}
			var all strings.Builder
			for _, a := range set {
				for _, o := range a.Objects {
					data, err := o.MarshalJSON()
					if err != nil {
						t.Fatal(err)
					}
					all.Write(data)
				}
			}
			text := all.String()
			if strings.Contains(text, "LOTSE_") {
				t.Error("a placeholder is left in the rendering")
			}
			for _, want := range []string{`"10.250.3.1"`, `"24001"`} {
				if !strings.Contains(text, want) {
					t.Errorf("the API server's %s is not in the rendering", want)
				}
			}
			if plugin == PluginCalico && !strings.Contains(text, `"10.123.0.0/16"`) {
				t.Error("calico's pool is not the cluster's pod range")
			}
		})
	}
	if !regexp.MustCompile(`^v[0-9]+[.][0-9]+[.][0-9]+$`).MatchString(CiliumVersion) {
		t.Errorf("CiliumVersion %q from the manifest's header", CiliumVersion)
	}
}

// TestRenderTrustAnnotation: every managed workload's pod template carries
// the cluster's trust digest (a CA rotation restarts the pods), and
// nothing else does.
func TestRenderTrustAnnotation(t *testing.T) {
	set, err := Render(Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x", Tunnel: testTunnel(), TrustDigest: "abc"})
	if err != nil {
		t.Fatal(err)
	}
	workloads := 0
	for _, a := range set {
		for _, o := range a.Objects {
			got, found, _ := unstructured.NestedString(o.Object, "spec", "template", "metadata", "annotations", AnnotationTrust)
			switch o.GetKind() {
			case "Deployment", "DaemonSet":
				workloads++
				if got != "abc" {
					t.Errorf("%s %s: trust annotation %q, want abc", o.GetKind(), o.GetName(), got)
				}
			default:
				if found {
					t.Errorf("%s %s carries the trust annotation", o.GetKind(), o.GetName())
				}
			}
		}
	}
	if workloads < 2 {
		t.Fatalf("only %d workloads rendered", workloads)
	}
	set, _ = Render(Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "x"})
	if _, found, _ := unstructured.NestedString(find(set, "Deployment", "coredns").Object, "spec", "template", "metadata", "annotations", AnnotationTrust); found {
		t.Error("without a digest the annotation is set")
	}
}
