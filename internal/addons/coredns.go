package addons

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// CoreDNSName names the CoreDNS addon and its Deployment.
const CoreDNSName = "coredns"

// corefile serves cluster.local; it forwards other names only to the given
// upstreams (none by default: local clusters send nothing out).
func corefile(upstreams []string) string {
	var b strings.Builder
	b.WriteString(`.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
`)
	if len(upstreams) > 0 {
		b.WriteString("    forward . " + strings.Join(upstreams, " ") + "\n")
	}
	b.WriteString(`    cache 30
    loop
    reload
    loadbalance
}
`)
	return b.String()
}

func renderCoreDNS(cfg Config) ([]runtime.Object, error) {
	selector := map[string]string{"k8s-app": "kube-dns"}
	deployment := &appsv1.Deployment{
		TypeMeta:   typeMeta("apps/v1", "Deployment"),
		ObjectMeta: objectMeta(systemNamespace, CoreDNSName, selector),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(max(cfg.Replicas, 1))),
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: ptr(intstr.FromInt32(1))}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: withPolicyLabels(selector, LabelToAPIServer)},
				Spec: corev1.PodSpec{
					ServiceAccountName: CoreDNSName,
					PriorityClassName:  "system-cluster-critical",
					DNSPolicy:          corev1.DNSDefault,
					Tolerations:        cfg.deploymentTolerations(),
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 100, PodAffinityTerm: corev1.PodAffinityTerm{
							TopologyKey: "kubernetes.io/hostname", LabelSelector: &metav1.LabelSelector{MatchLabels: selector}}}}}},
					Containers: []corev1.Container{{
						Name:            "coredns",
						Image:           cfg.CoreDNSImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"-conf", "/etc/coredns/Corefile"},
						Resources:       requests("50m", "40Mi", "170Mi"),
						Ports: []corev1.ContainerPort{
							{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
							{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
							{Name: "metrics", ContainerPort: 9153, Protocol: corev1.ProtocolTCP},
						},
						LivenessProbe:  httpProbe("", "/health", 8080, 10, 10),
						ReadinessProbe: httpProbe("", "/ready", 8181, 2, 0),
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr(false),
							Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}, Drop: []corev1.Capability{"ALL"}},
							ReadOnlyRootFilesystem:   ptr(true),
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns", ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: CoreDNSName},
						Items:                []corev1.KeyToPath{{Key: "Corefile", Path: "Corefile"}}}}}},
				},
			},
		},
	}
	return []runtime.Object{
		serviceAccount(systemNamespace, CoreDNSName, true),
		clusterRole("system:coredns",
			rule([]string{""}, []string{"endpoints", "services", "pods", "namespaces"}, []string{"list", "watch"}),
			rule([]string{"discovery.k8s.io"}, []string{"endpointslices"}, []string{"list", "watch"})),
		clusterRoleBinding("system:coredns", "system:coredns", serviceAccountSubject(systemNamespace, CoreDNSName)),
		&corev1.ConfigMap{TypeMeta: typeMeta("v1", "ConfigMap"), ObjectMeta: objectMeta(systemNamespace, CoreDNSName, nil),
			Data: map[string]string{"Corefile": corefile(cfg.Upstreams)}},
		deployment,
		&policyv1.PodDisruptionBudget{TypeMeta: typeMeta("policy/v1", "PodDisruptionBudget"), ObjectMeta: objectMeta(systemNamespace, CoreDNSName, nil),
			Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr(intstr.FromInt32(1)), Selector: &metav1.LabelSelector{MatchLabels: selector}}},
		&corev1.Service{
			TypeMeta:   typeMeta("v1", "Service"),
			ObjectMeta: objectMeta(systemNamespace, "kube-dns", map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}),
			Spec: corev1.ServiceSpec{
				Selector:  selector,
				ClusterIP: cfg.ClusterDNS,
				Ports: []corev1.ServicePort{
					{Name: "dns", Port: 53, TargetPort: intstr.FromInt32(53), Protocol: corev1.ProtocolUDP},
					{Name: "dns-tcp", Port: 53, TargetPort: intstr.FromInt32(53), Protocol: corev1.ProtocolTCP},
					{Name: "metrics", Port: 9153, TargetPort: intstr.FromInt32(9153), Protocol: corev1.ProtocolTCP},
				},
			},
		},
	}, nil
}
