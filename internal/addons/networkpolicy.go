package addons

import (
	"fmt"
	"net/netip"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Names of the network policy addons.
const (
	// NetworkPolicyAgentName names the agent that enforces NetworkPolicies
	// on every node (kube-router's firewall) and its DaemonSet.
	NetworkPolicyAgentName = "kube-router"
	// DefaultNetworkPoliciesName names the addon of the policies that
	// protect kube-system (and, on request, tenant namespaces).
	DefaultNetworkPoliciesName = "default-network-policies"
)

// Labels that open a kube-system pod's way to a destination, as Gardener's
// networking.gardener.cloud/to-* labels do: everything else is denied.
const (
	LabelToAPIServer = "networking.lotse.dev/to-apiserver"
	LabelToDNS       = "networking.lotse.dev/to-dns"
	allowed          = "allowed"
)

// NetworkPolicies configures their enforcement and the default policies.
type NetworkPolicies struct {
	// AgentImage is the kube-router image (loaded on every node).
	AgentImage string
	// ServiceCIDR is the cluster's Service range.
	ServiceCIDR string
	// NodesCIDR is the network of the machines: host-network pods and the
	// konnectivity agents reach pods from there.
	NodesCIDR string
	// APIServer and APIPort are where pods reach the API server after the
	// kubernetes Service is resolved (the node endpoint on the gateway).
	APIServer string
	APIPort   int
	// TenantNamespaces get a deny-all policy (DNS still allowed) when
	// DefaultDenyTenantNamespaces is set.
	DefaultDenyTenantNamespaces bool
	TenantNamespaces            []string
}

// Port kube-router serves /healthz on, in each node's network namespace.
const networkPolicyAgentHealthPort = 20244

func renderNetworkPolicyAgent(cfg Config) ([]runtime.Object, error) {
	np := cfg.NetworkPolicies
	if np == nil || cfg.Network.PluginEnforcesPolicies() {
		return nil, nil
	}
	if np.AgentImage == "" || np.ServiceCIDR == "" {
		return nil, fmt.Errorf("the agent image and the service range are required")
	}
	selector := map[string]string{"k8s-app": NetworkPolicyAgentName}
	name := NetworkPolicyAgentName
	daemonSet := &appsv1.DaemonSet{
		TypeMeta:   typeMeta("apps/v1", "DaemonSet"),
		ObjectMeta: objectMeta(systemNamespace, name, selector),
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr(intstr.FromInt32(1))}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: selector},
				Spec: corev1.PodSpec{
					ServiceAccountName: name,
					PriorityClassName:  "system-node-critical",
					// It programs the node's own iptables and ipsets.
					HostNetwork: true,
					DNSPolicy:   corev1.DNSClusterFirstWithHostNet,
					Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{
						Name:            name,
						Image:           np.AgentImage,
						ImagePullPolicy: corev1.PullNever,
						Args: []string{
							"--run-firewall=true",
							"--run-router=false",
							"--run-service-proxy=false",
							"--service-cluster-ip-range=" + np.ServiceCIDR,
							"--health-port=" + strconv.Itoa(networkPolicyAgentHealthPort),
							"--metrics-port=0",
						},
						Env:            []corev1.EnvVar{fieldEnv("NODE_NAME", "spec.nodeName")},
						Resources:      requests("20m", "40Mi", "200Mi"),
						LivenessProbe:  withFailureThreshold(httpProbe("127.0.0.1", "/healthz", networkPolicyAgentHealthPort, 5, 10), 3),
						ReadinessProbe: httpProbe("127.0.0.1", "/healthz", networkPolicyAgentHealthPort, 2, 0),
						SecurityContext: &corev1.SecurityContext{
							// iptables and ipset need NET_ADMIN and NET_RAW
							// in the node's network namespace, nothing more.
							Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}},
							AllowPrivilegeEscalation: ptr(false),
							ReadOnlyRootFilesystem:   ptr(true),
						},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "lib-modules", MountPath: "/lib/modules", ReadOnly: true},
							{Name: "xtables-lock", MountPath: "/run/xtables.lock"},
							{Name: "tmp", MountPath: "/tmp"},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "lib-modules", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/lib/modules"}}},
						{Name: "xtables-lock", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
							Path: "/run/xtables.lock", Type: ptr(corev1.HostPathFileOrCreate)}}},
						{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					},
				},
			},
		},
	}
	read := []string{"get", "list", "watch"}
	return []runtime.Object{
		serviceAccount(systemNamespace, name, true),
		// What the firewall reads (its informers wait for all of these)
		// and its events; nothing it writes besides.
		clusterRole("lotse:"+name,
			rule([]string{""}, []string{"namespaces", "pods", "services", "nodes", "endpoints"}, read),
			rule([]string{"networking.k8s.io"}, []string{"networkpolicies"}, read),
			rule([]string{"discovery.k8s.io"}, []string{"endpointslices"}, read),
			rule([]string{""}, []string{"events"}, []string{"create", "patch", "update"})),
		clusterRoleBinding("lotse:"+name, "lotse:"+name, serviceAccountSubject(systemNamespace, name)),
		daemonSet,
	}, nil
}

func networkPolicy(namespace, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{TypeMeta: typeMeta("networking.k8s.io/v1", "NetworkPolicy"), ObjectMeta: objectMeta(namespace, name, nil), Spec: spec}
}

func dnsPorts() []networkingv1.NetworkPolicyPort {
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	return []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: ptr(intstr.FromInt32(53))}, {Protocol: &tcp, Port: ptr(intstr.FromInt32(53))}}
}

func tcpPort(p int) networkingv1.NetworkPolicyPort {
	tcp := corev1.ProtocolTCP
	return networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: ptr(intstr.FromInt32(int32(p)))}
}

var bothDirections = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}

// toDNS is an egress peer: the cluster DNS pods.
func toDNS() networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": systemNamespace}},
		PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
	}
}

// renderDefaultNetworkPolicies: kube-system denies everything, then allows
// what system components need, each by a policy named for it (Gardener's
// allow-* pattern): DNS from every namespace and every node, the API
// server to pods labelled for it, DNS to pods labelled for it.
func renderDefaultNetworkPolicies(cfg Config) ([]runtime.Object, error) {
	np := cfg.NetworkPolicies
	if np == nil {
		return nil, nil
	}
	nodes, err := netip.ParsePrefix(np.NodesCIDR)
	if err != nil {
		return nil, fmt.Errorf("nodes range %q: %w", np.NodesCIDR, err)
	}
	api, err := netip.ParseAddr(np.APIServer)
	if err != nil || np.APIPort == 0 {
		return nil, fmt.Errorf("API server address %q port %d: not an address and port", np.APIServer, np.APIPort)
	}
	fromNodes := networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: nodes.Masked().String()}}
	objs := []runtime.Object{
		networkPolicy(systemNamespace, "deny-all", networkingv1.NetworkPolicySpec{PolicyTypes: bothDirections}),
		networkPolicy(systemNamespace, "allow-dns", networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				// Pods of every namespace, and host-network pods and
				// resolvers on the nodes.
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}, fromNodes},
				Ports: dnsPorts(),
			}},
		}),
		networkPolicy(systemNamespace, "allow-to-apiserver", networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{LabelToAPIServer: allowed}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(api, api.BitLen()).String()}}},
				Ports: []networkingv1.NetworkPolicyPort{tcpPort(np.APIPort)},
			}},
		}),
		networkPolicy(systemNamespace, "allow-to-dns", networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{LabelToDNS: allowed}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{toDNS()}, Ports: dnsPorts()}},
		}),
	}
	if len(cfg.Upstreams) > 0 {
		// CoreDNS forwards to the provider's resolvers.
		var to []networkingv1.NetworkPolicyPeer
		for _, u := range cfg.Upstreams {
			a, err := netip.ParseAddr(u)
			if err != nil {
				return nil, fmt.Errorf("DNS upstream %q is not an address", u)
			}
			to = append(to, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(a, a.BitLen()).String()}})
		}
		objs = append(objs, networkPolicy(systemNamespace, "allow-dns-upstreams", networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{To: to, Ports: dnsPorts()}},
		}))
	}
	if np.DefaultDenyTenantNamespaces {
		for _, ns := range np.TenantNamespaces {
			objs = append(objs,
				networkPolicy(ns, "deny-all", networkingv1.NetworkPolicySpec{PolicyTypes: bothDirections}),
				networkPolicy(ns, "allow-to-dns", networkingv1.NetworkPolicySpec{
					PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
					Egress:      []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{toDNS()}, Ports: dnsPorts()}},
				}))
		}
	}
	return objs, nil
}

// SystemNamespaces are the namespaces Kubernetes and Lotse keep for
// themselves; every other namespace is a tenant's.
var SystemNamespaces = []string{systemNamespace, "kube-public", "kube-node-lease"}

// withPolicyLabels marks a pod template for the allow-* policies it needs.
func withPolicyLabels(labels map[string]string, keys ...string) map[string]string {
	out := map[string]string{}
	for k, v := range labels {
		out[k] = v
	}
	for _, k := range keys {
		out[k] = allowed
	}
	return out
}
