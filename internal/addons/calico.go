package addons

// Calico as the pod network: calico-node on every node (BGP between the
// nodes, IP-in-IP, calico IPAM, Felix enforcing NetworkPolicies) and
// calico-kube-controllers, in the shape of upstream's calico.yaml manifest
// (Kubernetes datastore, no Typha) at CalicoVersion. Its images come from
// upstream's registry, so it runs only where nodes can pull them.

import (
	"encoding/json"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// CalicoVersion is the pinned Calico release.
const CalicoVersion = "v3.30.3"

// calicoRegistry is where upstream publishes Calico's images.
const calicoRegistry = "docker.io/calico/"

// calicoKinds are the custom resources of crd.projectcalico.org that
// calico-node and calico-kube-controllers use, with their scope. Calico
// validates them itself (through its own API server or calicoctl), so the
// CRDs keep unknown fields as upstream's manifest does in effect.
var calicoKinds = []struct {
	kind       string
	namespaced bool
}{
	{"BGPConfiguration", false}, {"BGPFilter", false}, {"BGPPeer", false}, {"BlockAffinity", false},
	{"CalicoNodeStatus", false}, {"ClusterInformation", false}, {"FelixConfiguration", false},
	{"GlobalNetworkPolicy", false}, {"GlobalNetworkSet", false}, {"HostEndpoint", false},
	{"IPAMBlock", false}, {"IPAMConfig", false}, {"IPAMHandle", false}, {"IPPool", false},
	{"IPReservation", false}, {"KubeControllersConfiguration", false}, {"NetworkPolicy", true},
	{"NetworkSet", true}, {"StagedGlobalNetworkPolicy", false}, {"StagedKubernetesNetworkPolicy", true},
	{"StagedNetworkPolicy", true}, {"Tier", false},
}

const calicoGroup = "crd.projectcalico.org"

func calicoCRD(kind string, namespaced bool) *apiextensionsv1.CustomResourceDefinition {
	plural := plural(kind)
	scope := apiextensionsv1.ClusterScoped
	if namespaced {
		scope = apiextensionsv1.NamespaceScoped
	}
	return &apiextensionsv1.CustomResourceDefinition{
		TypeMeta:   typeMeta("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
		ObjectMeta: objectMeta("", plural+"."+calicoGroup, nil),
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: calicoGroup,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: kind, ListKind: kind + "List", Plural: plural, Singular: strings.ToLower(kind)},
			Scope: scope,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"apiVersion": {Type: "string"}, "kind": {Type: "string"}, "metadata": {Type: "object"},
						"spec":   {Type: "object", XPreserveUnknownFields: ptr(true)},
						"status": {Type: "object", XPreserveUnknownFields: ptr(true)},
					},
				}},
			}},
		},
	}
}

// plural is the lower-case plural of a Calico kind (all of them end in a
// consonant other than s or y, or in "y" after a consonant).
func plural(kind string) string {
	l := strings.ToLower(kind)
	if l[len(l)-1] == 'y' {
		return l[:len(l)-1] + "ies"
	}
	return l + "s"
}

// calicoCNIConfig is the network configuration calico's install-cni writes
// on every node; the __...__ placeholders are its own.
func calicoCNIConfig() string {
	conf := map[string]any{
		"name": "k8s-pod-network", "cniVersion": "0.3.1",
		"plugins": []any{
			map[string]any{
				"type": "calico", "log_level": "info", "log_file_path": "/var/log/calico/cni/cni.log",
				"datastore_type": "kubernetes", "nodename": "__KUBERNETES_NODE_NAME__", "mtu": "__CNI_MTU__",
				"ipam": map[string]string{"type": "calico-ipam"}, "policy": map[string]string{"type": "k8s"},
				"kubernetes": map[string]string{"kubeconfig": "__KUBECONFIG_FILEPATH__"},
			},
			map[string]any{"type": "portmap", "snat": true, "capabilities": map[string]bool{"portMappings": true}},
			map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
		},
	}
	data, _ := json.MarshalIndent(conf, "", "  ")
	// install-cni substitutes __CNI_MTU__ as a number.
	return strings.ReplaceAll(string(data), `"__CNI_MTU__"`, `__CNI_MTU__`)
}

func renderCalico(cfg Config) ([]runtime.Object, error) {
	n := cfg.Network
	var objs []runtime.Object
	for _, k := range calicoKinds {
		objs = append(objs, calicoCRD(k.kind, k.namespaced))
	}
	read := []string{"get", "list", "watch"}
	calicoResources := []string{"globalfelixconfigs", "felixconfigurations", "bgppeers", "bgpfilters", "globalbgpconfigs",
		"bgpconfigurations", "ippools", "ipreservations", "ipamblocks", "globalnetworkpolicies", "stagedglobalnetworkpolicies",
		"networkpolicies", "stagednetworkpolicies", "stagedkubernetesnetworkpolicies", "globalnetworksets", "networksets",
		"clusterinformations", "hostendpoints", "blockaffinities", "caliconodestatuses", "tiers"}
	objs = append(objs,
		serviceAccount(systemNamespace, "calico-node", true),
		serviceAccount(systemNamespace, "calico-cni-plugin", true),
		serviceAccount(systemNamespace, "calico-kube-controllers", true),
		&corev1.ConfigMap{TypeMeta: typeMeta("v1", "ConfigMap"), ObjectMeta: objectMeta(systemNamespace, "calico-config", nil),
			Data: map[string]string{
				"typha_service_name": "none", "calico_backend": "bird", "veth_mtu": "0",
				"cni_network_config": calicoCNIConfig(),
			}},
		// The API server is outside the cluster: Calico reaches it directly,
		// not through the kubernetes Service that kube-proxy implements.
		&corev1.ConfigMap{TypeMeta: typeMeta("v1", "ConfigMap"), ObjectMeta: objectMeta(systemNamespace, "kubernetes-services-endpoint", nil),
			Data: map[string]string{"KUBERNETES_SERVICE_HOST": n.APIServerHost, "KUBERNETES_SERVICE_PORT": strconv.Itoa(n.APIServerPort)}},
		clusterRole("calico-cni-plugin",
			rule([]string{""}, []string{"pods", "nodes", "namespaces"}, []string{"get"}),
			rule([]string{""}, []string{"pods/status"}, []string{"patch"}),
			rule([]string{calicoGroup}, []string{"blockaffinities", "ipamblocks", "ipamhandles", "clusterinformations", "ippools", "ipreservations", "ipamconfigs"},
				[]string{"get", "list", "create", "update", "delete"})),
		clusterRoleBinding("calico-cni-plugin", "calico-cni-plugin", serviceAccountSubject(systemNamespace, "calico-cni-plugin")),
		clusterRole("calico-node",
			rule([]string{""}, []string{"serviceaccounts/token"}, []string{"create"}),
			rule([]string{""}, []string{"pods", "nodes", "namespaces"}, []string{"get"}),
			rule([]string{"discovery.k8s.io"}, []string{"endpointslices"}, []string{"watch", "list"}),
			rule([]string{""}, []string{"endpoints", "services"}, read),
			rule([]string{""}, []string{"configmaps"}, []string{"get"}),
			rule([]string{""}, []string{"nodes/status"}, []string{"patch", "update"}),
			rule([]string{"networking.k8s.io"}, []string{"networkpolicies"}, []string{"watch", "list"}),
			rule([]string{"policy.networking.k8s.io"}, []string{"adminnetworkpolicies", "baselineadminnetworkpolicies"}, []string{"watch", "list"}),
			rule([]string{""}, []string{"pods", "namespaces", "serviceaccounts"}, []string{"list", "watch"}),
			rule([]string{""}, []string{"pods/status"}, []string{"patch"}),
			rule([]string{calicoGroup}, calicoResources, read),
			rule([]string{calicoGroup}, []string{"ippools", "felixconfigurations", "clusterinformations"}, []string{"create", "update"}),
			rule([]string{calicoGroup}, []string{"caliconodestatuses"}, []string{"update"}),
			rule([]string{""}, []string{"nodes"}, read),
			rule([]string{calicoGroup}, []string{"bgpconfigurations", "bgppeers"}, []string{"create", "update"}),
			rule([]string{calicoGroup}, []string{"blockaffinities", "ipamblocks", "ipamhandles"}, []string{"get", "list", "create", "update", "delete"}),
			rule([]string{calicoGroup}, []string{"ipamconfigs"}, []string{"get", "create"}),
			rule([]string{calicoGroup}, []string{"blockaffinities"}, []string{"watch"}),
			rule([]string{"apps"}, []string{"daemonsets"}, []string{"get"})),
		clusterRoleBinding("calico-node", "calico-node", serviceAccountSubject(systemNamespace, "calico-node")),
		clusterRole("calico-kube-controllers",
			rule([]string{""}, []string{"nodes"}, read),
			rule([]string{""}, []string{"pods"}, []string{"get", "list", "watch"}),
			rule([]string{""}, []string{"services"}, []string{"get", "list", "update", "watch"}),
			rule([]string{calicoGroup}, []string{"ipreservations", "ippools"}, []string{"list"}),
			rule([]string{calicoGroup}, []string{"blockaffinities", "ipamblocks", "ipamhandles", "ipamconfigs", "tiers"},
				[]string{"get", "list", "create", "update", "delete", "watch"}),
			rule([]string{calicoGroup}, []string{"hostendpoints"}, []string{"get", "list", "create", "update", "delete"}),
			rule([]string{calicoGroup}, []string{"clusterinformations"}, []string{"get", "list", "create", "update", "watch"}),
			rule([]string{calicoGroup}, []string{"kubecontrollersconfigurations"}, []string{"get", "create", "list", "update", "watch"})),
		clusterRoleBinding("calico-kube-controllers", "calico-kube-controllers", serviceAccountSubject(systemNamespace, "calico-kube-controllers")),
		calicoNode(n),
		calicoKubeControllers(cfg),
	)
	return objs, nil
}

func calicoNode(n *Network) *appsv1.DaemonSet {
	labels := map[string]string{"k8s-app": "calico-node"}
	image := func(name string) string { return calicoRegistry + name + ":" + CalicoVersion }
	configKey := func(env, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: env, ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "calico-config"}, Key: key}}}
	}
	value := func(name, v string) corev1.EnvVar { return corev1.EnvVar{Name: name, Value: v} }
	endpoint := []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "kubernetes-services-endpoint"}, Optional: ptr(true)}}}
	hostPath := func(name, path string, t corev1.HostPathType) corev1.Volume {
		v := corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path}}}
		if t != "" {
			v.HostPath.Type = ptr(t)
		}
		return v
	}
	privileged := &corev1.SecurityContext{Privileged: ptr(true)}
	return &appsv1.DaemonSet{
		TypeMeta:   typeMeta("apps/v1", "DaemonSet"),
		ObjectMeta: objectMeta(systemNamespace, "calico-node", labels),
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr(intstr.FromInt32(1))}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{"kubernetes.io/os": "linux"},
					HostNetwork:                   true,
					ServiceAccountName:            "calico-node",
					PriorityClassName:             "system-node-critical",
					TerminationGracePeriodSeconds: ptr(int64(0)),
					Tolerations: []corev1.Toleration{
						{Effect: corev1.TaintEffectNoSchedule, Operator: corev1.TolerationOpExists},
						{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists},
						{Effect: corev1.TaintEffectNoExecute, Operator: corev1.TolerationOpExists},
					},
					InitContainers: []corev1.Container{
						{
							Name: "upgrade-ipam", Image: image("cni"), Command: []string{"/opt/cni/bin/calico-ipam", "-upgrade"},
							EnvFrom: endpoint, Env: []corev1.EnvVar{fieldEnv("KUBERNETES_NODE_NAME", "spec.nodeName"), configKey("CALICO_NETWORKING_BACKEND", "calico_backend")},
							VolumeMounts: []corev1.VolumeMount{
								{Name: "host-local-net-dir", MountPath: "/var/lib/cni/networks"},
								{Name: "cni-bin-dir", MountPath: "/host/opt/cni/bin"},
							},
							SecurityContext: privileged,
						},
						{
							Name: "install-cni", Image: image("cni"), Command: []string{"/opt/cni/bin/install"},
							EnvFrom: endpoint,
							Env: []corev1.EnvVar{
								value("CNI_CONF_NAME", "10-calico.conflist"),
								configKey("CNI_NETWORK_CONFIG", "cni_network_config"),
								fieldEnv("KUBERNETES_NODE_NAME", "spec.nodeName"),
								configKey("CNI_MTU", "veth_mtu"),
								value("SLEEP", "false"),
							},
							VolumeMounts: []corev1.VolumeMount{
								{Name: "cni-bin-dir", MountPath: "/host/opt/cni/bin"},
								{Name: "cni-net-dir", MountPath: "/host/etc/cni/net.d"},
							},
							SecurityContext: privileged,
						},
						{
							Name: "mount-bpffs", Image: image("node"), Command: []string{"calico-node", "-init", "-best-effort"},
							VolumeMounts: []corev1.VolumeMount{
								{Name: "sys-fs", MountPath: "/sys/fs", MountPropagation: ptr(corev1.MountPropagationBidirectional)},
								{Name: "var-run-calico", MountPath: "/var/run/calico", MountPropagation: ptr(corev1.MountPropagationBidirectional)},
								{Name: "nodeproc", MountPath: "/nodeproc", ReadOnly: true},
							},
							SecurityContext: privileged,
						},
					},
					Containers: []corev1.Container{{
						Name: "calico-node", Image: image("node"), EnvFrom: endpoint,
						Env: []corev1.EnvVar{
							value("DATASTORE_TYPE", "kubernetes"),
							value("WAIT_FOR_DATASTORE", "true"),
							fieldEnv("NODENAME", "spec.nodeName"),
							configKey("CALICO_NETWORKING_BACKEND", "calico_backend"),
							value("CLUSTER_TYPE", "k8s,bgp"),
							value("IP", "autodetect"),
							value("CALICO_IPV4POOL_CIDR", n.PodCIDR),
							value("CALICO_IPV4POOL_IPIP", "Always"),
							value("CALICO_IPV4POOL_VXLAN", "Never"),
							value("CALICO_IPV6POOL_VXLAN", "Never"),
							configKey("FELIX_IPINIPMTU", "veth_mtu"),
							configKey("FELIX_VXLANMTU", "veth_mtu"),
							configKey("FELIX_WIREGUARDMTU", "veth_mtu"),
							value("CALICO_DISABLE_FILE_LOGGING", "true"),
							value("FELIX_DEFAULTENDPOINTTOHOSTACTION", "ACCEPT"),
							value("FELIX_IPV6SUPPORT", "false"),
							value("FELIX_HEALTHENABLED", "true"),
						},
						SecurityContext: privileged,
						Resources:       corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: quantity("250m")}},
						Lifecycle:       &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/calico-node", "-shutdown"}}}},
						LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/calico-node", "-felix-live", "-bird-live"}}},
							PeriodSeconds: 10, InitialDelaySeconds: 10, FailureThreshold: 6, TimeoutSeconds: 10},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/calico-node", "-felix-ready", "-bird-ready"}}},
							PeriodSeconds: 10, TimeoutSeconds: 10},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "cni-net-dir", MountPath: "/host/etc/cni/net.d"},
							{Name: "lib-modules", MountPath: "/lib/modules", ReadOnly: true},
							{Name: "xtables-lock", MountPath: "/run/xtables.lock"},
							{Name: "var-run-calico", MountPath: "/var/run/calico"},
							{Name: "var-lib-calico", MountPath: "/var/lib/calico"},
							{Name: "policysync", MountPath: "/var/run/nodeagent"},
							{Name: "bpffs", MountPath: "/sys/fs/bpf"},
							{Name: "cni-log-dir", MountPath: "/var/log/calico/cni", ReadOnly: true},
						},
					}},
					Volumes: []corev1.Volume{
						hostPath("lib-modules", "/lib/modules", ""),
						hostPath("var-run-calico", "/var/run/calico", corev1.HostPathDirectoryOrCreate),
						hostPath("var-lib-calico", "/var/lib/calico", corev1.HostPathDirectoryOrCreate),
						hostPath("xtables-lock", "/run/xtables.lock", corev1.HostPathFileOrCreate),
						hostPath("sys-fs", "/sys/fs/", corev1.HostPathDirectoryOrCreate),
						hostPath("bpffs", "/sys/fs/bpf", corev1.HostPathDirectory),
						hostPath("nodeproc", "/proc", ""),
						hostPath("cni-bin-dir", "/opt/cni/bin", corev1.HostPathDirectoryOrCreate),
						hostPath("cni-net-dir", "/etc/cni/net.d", ""),
						hostPath("cni-log-dir", "/var/log/calico/cni", ""),
						hostPath("host-local-net-dir", "/var/lib/cni/networks", ""),
						hostPath("policysync", "/var/run/nodeagent", corev1.HostPathDirectoryOrCreate),
					},
				},
			},
		},
	}
}

func calicoKubeControllers(cfg Config) *appsv1.Deployment {
	labels := map[string]string{"k8s-app": "calico-kube-controllers"}
	probe := func(flag string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/usr/bin/check-status", flag}}},
			PeriodSeconds: 10, TimeoutSeconds: 10}
	}
	return &appsv1.Deployment{
		TypeMeta:   typeMeta("apps/v1", "Deployment"),
		ObjectMeta: objectMeta(systemNamespace, "calico-kube-controllers", labels),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:       map[string]string{"kubernetes.io/os": "linux"},
					ServiceAccountName: "calico-kube-controllers",
					PriorityClassName:  "system-cluster-critical",
					Tolerations:        cfg.deploymentTolerations(),
					Containers: []corev1.Container{{
						Name: "calico-kube-controllers", Image: calicoRegistry + "kube-controllers:" + CalicoVersion,
						EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "kubernetes-services-endpoint"}, Optional: ptr(true)}}},
						Env: []corev1.EnvVar{
							{Name: "ENABLED_CONTROLLERS", Value: "node,loadbalancer"},
							{Name: "DATASTORE_TYPE", Value: "kubernetes"},
						},
						LivenessProbe:  withFailureThreshold(probe("-l"), 6),
						ReadinessProbe: probe("-r"),
						SecurityContext: &corev1.SecurityContext{
							RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(999)), AllowPrivilegeEscalation: ptr(false),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
}
