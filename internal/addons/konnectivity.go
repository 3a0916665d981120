package addons

import (
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Tunnel configures the konnectivity agents: every node runs one (host
// network), which dials out to the control plane's tunnel servers and
// carries the API servers' traffic into the cluster's network.
type Tunnel struct {
	// Image is the agent image (loaded on every node).
	Image string
	// Host and Port are where agents reach the tunnel servers.
	Host string
	Port int
	// Servers is how many servers each agent must hold a connection to.
	Servers int
	// CA verifies the servers; Cert and Key are the agents' client
	// certificate (PEM).
	CA, Cert, Key []byte
}

// TunnelAgentName names the tunnel addon and the agent's DaemonSet, Secret
// and ServiceAccount.
const TunnelAgentName = "konnectivity-agent"

// Ports the agent listens on in each node's network namespace, loopback only.
const (
	tunnelAgentAdminPort  = 8133
	tunnelAgentHealthPort = 8134
)

func renderTunnel(cfg Config) ([]runtime.Object, error) {
	t := cfg.Tunnel
	if t == nil {
		return nil, nil
	}
	if t.Image == "" || t.Host == "" || t.Port == 0 || t.Servers < 1 || len(t.CA) == 0 || len(t.Cert) == 0 || len(t.Key) == 0 {
		return nil, fmt.Errorf("image, host, port, server count and credentials are all required")
	}
	selector := map[string]string{"k8s-app": TunnelAgentName}
	args := []string{
		"--proxy-server-host=" + t.Host,
		"--proxy-server-port=" + strconv.Itoa(t.Port),
		"--ca-cert=/etc/konnectivity/ca.crt",
		"--agent-cert=/etc/konnectivity/tls.crt",
		"--agent-key=/etc/konnectivity/tls.key",
		"--agent-id=$(NODE_NAME)",
		// The server sends a node's kubelet traffic to that node's agent.
		"--agent-identifiers=ipv4=$(HOST_IP)",
		"--sync-forever=true",
		"--sync-interval=1s",
		"--sync-interval-cap=15s",
		"--probe-interval=1s",
		"--keepalive-time=30s",
		"--admin-bind-address=127.0.0.1",
		"--admin-server-port=" + strconv.Itoa(tunnelAgentAdminPort),
		"--health-server-host=127.0.0.1",
		"--health-server-port=" + strconv.Itoa(tunnelAgentHealthPort),
	}
	daemonSet := &appsv1.DaemonSet{
		TypeMeta:   typeMeta("apps/v1", "DaemonSet"),
		ObjectMeta: objectMeta(systemNamespace, TunnelAgentName, selector),
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr(intstr.FromInt32(1))}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: selector},
				Spec: corev1.PodSpec{
					ServiceAccountName:           TunnelAgentName,
					AutomountServiceAccountToken: ptr(false),
					SecurityContext:              &corev1.PodSecurityContext{FSGroup: ptr(int64(65534))},
					PriorityClassName:            "system-node-critical",
					// On the node's own network: the API server's kubelet
					// connections (logs, exec, port-forward) and pod traffic
					// leave from the node.
					HostNetwork: true,
					DNSPolicy:   corev1.DNSClusterFirstWithHostNet,
					Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{
						Name:            "agent",
						Image:           t.Image,
						ImagePullPolicy: corev1.PullNever,
						Args:            args,
						Env:             []corev1.EnvVar{fieldEnv("NODE_NAME", "spec.nodeName"), fieldEnv("HOST_IP", "status.hostIP")},
						Resources:       requests("10m", "20Mi", "100Mi"),
						LivenessProbe:   withFailureThreshold(httpProbe("127.0.0.1", "/healthz", tunnelAgentHealthPort, 10, 0), 3),
						ReadinessProbe:  httpProbe("127.0.0.1", "/readyz", tunnelAgentHealthPort, 1, 0),
						SecurityContext: restricted(65534),
						VolumeMounts:    []corev1.VolumeMount{{Name: "credentials", MountPath: "/etc/konnectivity", ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{Name: "credentials", VolumeSource: corev1.VolumeSource{
						Secret: &corev1.SecretVolumeSource{SecretName: TunnelAgentName, DefaultMode: ptr(int32(0o440))}}}},
				},
			},
		},
	}
	return []runtime.Object{
		&corev1.Secret{TypeMeta: typeMeta("v1", "Secret"), ObjectMeta: objectMeta(systemNamespace, TunnelAgentName, nil), Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"ca.crt": t.CA, "tls.crt": t.Cert, "tls.key": t.Key}},
		serviceAccount(systemNamespace, TunnelAgentName, false),
		daemonSet,
	}, nil
}

func withFailureThreshold(p *corev1.Probe, n int32) *corev1.Probe {
	p.FailureThreshold = n
	return p
}

// restricted is the security context of a container that needs no
// privileges at all.
func restricted(uid int64) *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsUser: ptr(uid), RunAsGroup: ptr(uid), RunAsNonRoot: ptr(true),
		AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}
