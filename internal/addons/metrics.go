package addons

import (
	"fmt"
	"net/netip"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
)

// MetricsServerName names the metrics addon, its Deployment, Service and
// ServiceAccount.
const MetricsServerName = "metrics-server"

// MetricsServerDNSNames are the names its serving certificate carries.
var MetricsServerDNSNames = []string{"metrics-server.kube-system.svc", "metrics-server.kube-system.svc.cluster.local"}

// metricsServerPort is where it serves in its pod.
const metricsServerPort = 10250

// Metrics configures metrics-server, which serves the resource metrics
// API (kubectl top, HorizontalPodAutoscalers) from the kubelets.
type Metrics struct {
	Image string
	// CA, Cert and Key (PEM): its serving certificate, which the API
	// server verifies with CA (no insecureSkipTLSVerify).
	CA, Cert, Key []byte
	// NodesCIDR: the API server's calls arrive through the tunnel agents
	// on the nodes, and the kubelets it scrapes listen there.
	NodesCIDR string
}

func renderMetrics(cfg Config) ([]runtime.Object, error) {
	m := cfg.Metrics
	if m == nil {
		return nil, nil
	}
	if m.Image == "" || len(m.CA) == 0 || len(m.Cert) == 0 || len(m.Key) == 0 {
		return nil, fmt.Errorf("the image and the serving certificate are required")
	}
	nodes, err := netip.ParsePrefix(m.NodesCIDR)
	if err != nil {
		return nil, fmt.Errorf("nodes range %q: %w", m.NodesCIDR, err)
	}
	name := MetricsServerName
	selector := map[string]string{"k8s-app": name}
	httpsProbe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("https"), Scheme: corev1.URISchemeHTTPS}},
			PeriodSeconds: 5, FailureThreshold: 3}
	}
	deployment := &appsv1.Deployment{
		TypeMeta:   typeMeta("apps/v1", "Deployment"),
		ObjectMeta: objectMeta(systemNamespace, name, selector),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: ptr(intstr.FromInt32(0))}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: withPolicyLabels(selector, LabelToAPIServer)},
				Spec: corev1.PodSpec{
					ServiceAccountName: name,
					PriorityClassName:  "system-cluster-critical",
					Tolerations:        cfg.deploymentTolerations(),
					Containers: []corev1.Container{{
						Name:            name,
						Image:           m.Image,
						ImagePullPolicy: corev1.PullNever,
						Args: []string{
							"--secure-port=" + fmt.Sprint(metricsServerPort),
							"--tls-cert-file=/etc/metrics-server/tls.crt",
							"--tls-private-key-file=/etc/metrics-server/tls.key",
							"--kubelet-preferred-address-types=InternalIP",
							"--kubelet-use-node-status-port",
							// Kubelets serve with certificates of the cluster CA
							// (Lotse approves them), which is the CA the pod trusts.
							"--kubelet-certificate-authority=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
							"--metric-resolution=15s",
						},
						Ports:           []corev1.ContainerPort{{Name: "https", ContainerPort: metricsServerPort, Protocol: corev1.ProtocolTCP}},
						Resources:       requests("20m", "40Mi", "200Mi"),
						ReadinessProbe:  httpsProbe("/readyz"),
						LivenessProbe:   httpsProbe("/livez"),
						SecurityContext: restricted(1000),
						VolumeMounts: []corev1.VolumeMount{
							{Name: "tls", MountPath: "/etc/metrics-server", ReadOnly: true},
							{Name: "tmp", MountPath: "/tmp"},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name, DefaultMode: ptr(int32(0o440))}}},
						{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					},
					SecurityContext: &corev1.PodSecurityContext{FSGroup: ptr(int64(1000))},
				},
			},
		},
	}
	read := []string{"get", "list", "watch"}
	fromNodes := []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: nodes.Masked().String()}}}
	return []runtime.Object{
		serviceAccount(systemNamespace, name, true),
		&corev1.Secret{TypeMeta: typeMeta("v1", "Secret"), ObjectMeta: objectMeta(systemNamespace, name, nil), Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.crt": m.Cert, "tls.key": m.Key}},
		// Who may read metrics: view, edit and admin, by aggregation.
		&rbacv1.ClusterRole{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
			ObjectMeta: objectMeta("", "system:aggregated-metrics-reader", map[string]string{
				"rbac.authorization.k8s.io/aggregate-to-view":  "true",
				"rbac.authorization.k8s.io/aggregate-to-edit":  "true",
				"rbac.authorization.k8s.io/aggregate-to-admin": "true",
			}),
			Rules: []rbacv1.PolicyRule{rule([]string{"metrics.k8s.io"}, []string{"pods", "nodes"}, read)}},
		clusterRole("system:metrics-server",
			rule([]string{""}, []string{"nodes/metrics"}, []string{"get"}),
			rule([]string{""}, []string{"pods", "nodes"}, read)),
		clusterRoleBinding("system:metrics-server", "system:metrics-server", serviceAccountSubject(systemNamespace, name)),
		clusterRoleBinding("metrics-server:system:auth-delegator", "system:auth-delegator", serviceAccountSubject(systemNamespace, name)),
		&rbacv1.RoleBinding{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"),
			ObjectMeta: objectMeta(systemNamespace, "metrics-server-auth-reader", nil),
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "extension-apiserver-authentication-reader"},
			Subjects:   []rbacv1.Subject{serviceAccountSubject(systemNamespace, name)}},
		&corev1.Service{
			TypeMeta:   typeMeta("v1", "Service"),
			ObjectMeta: objectMeta(systemNamespace, name, selector),
			Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{
				{Name: "https", Port: 443, TargetPort: intstr.FromString("https"), Protocol: corev1.ProtocolTCP}}},
		},
		deployment,
		&apiregistrationv1.APIService{
			TypeMeta:   typeMeta("apiregistration.k8s.io/v1", "APIService"),
			ObjectMeta: objectMeta("", "v1beta1.metrics.k8s.io", selector),
			Spec: apiregistrationv1.APIServiceSpec{
				Service:              &apiregistrationv1.ServiceReference{Name: name, Namespace: systemNamespace, Port: ptr(int32(443))},
				Group:                "metrics.k8s.io",
				Version:              "v1beta1",
				CABundle:             m.CA,
				GroupPriorityMinimum: 100,
				VersionPriority:      100,
			},
		},
		// The API server's calls come through the tunnel agents on the
		// nodes; metrics-server calls the kubelets there.
		networkPolicy(systemNamespace, "allow-metrics-server", networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: selector},
			PolicyTypes: bothDirections,
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: fromNodes, Ports: []networkingv1.NetworkPolicyPort{tcpPort(metricsServerPort)}}},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{To: fromNodes, Ports: []networkingv1.NetworkPolicyPort{tcpPort(10250)}}},
		}),
	}, nil
}
