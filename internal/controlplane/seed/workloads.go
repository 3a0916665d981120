package seed

// The objects of one control plane in its seed's namespace. They are
// rendered from the spec, the layout and the PKI files alone, so that
// rendering twice gives the same objects and applying them is idempotent.

import (
	"fmt"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/pki"
)

// Names and ports of the control plane's objects in the seed.
const (
	etcdName              = "etcd"
	apiServerName         = "kube-apiserver"
	apiServerService      = "kube-apiserver"
	controllerManagerName = "kube-controller-manager"
	schedulerName         = "kube-scheduler"
	tunnelServerName      = "konnectivity-server"

	apiServerPort     = 6443
	tunnelAgentPort   = 8132
	tunnelAdminPort   = 8133
	tunnelHealthPort  = 8134
	etcdClientPort    = 2379
	etcdPeerPort      = 2380
	etcdMetricsPort   = 2381
	controllerMgrPort = 10257
	schedulerPort     = 10259

	maxEtcdMembers = 3

	// pkiDir is where each component's Secret is mounted.
	pkiDir = "/pki"
	// tunnelSocket is the konnectivity server's socket, shared with the
	// API server in its pod.
	tunnelDir    = "/run/konnectivity"
	tunnelSocket = tunnelDir + "/konnectivity.sock"

	// nonRoot is the user every container runs as.
	nonRoot = 65532

	// LabelComponent names the component of a pod (and its selector).
	LabelComponent = "app.kubernetes.io/name"
	// LabelPartOf marks everything Lotse creates in a seed.
	LabelPartOf = "app.kubernetes.io/part-of"
	partOf      = "lotse-control-plane"
	// annotationCredentials is the digest of the Secret a pod template
	// mounts: a changed certificate or key rolls the pods.
	annotationCredentials = "lotse.dev/credentials"
	// AnnotationRestartedAt restarts a component's pods when it changes.
	AnnotationRestartedAt = "lotse.dev/restarted-at"
)

// secretName is the Secret of a component's credentials, named by their
// content: a rotation writes a new Secret that only the new pods mount,
// so an old pod that restarts before its turn still finds the files its
// flags name. Secrets no pod uses any more go after a rollout.
func (r render) secretName(component string) string {
	return component + "-credentials-" + digest(r.secrets[component])[:10]
}

// secret is a component's credentials.
func (r render) secret(component string) *corev1.Secret {
	return &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: meta(r.ns(), r.secretName(component), component), Type: corev1.SecretTypeOpaque, Data: r.secrets[component]}
}

// ImageRefs are the image references of a control plane's components.
type ImageRefs struct {
	Etcd, APIServer, ControllerManager, Scheduler, TunnelServer string
	// Commands, if set, are the executables of the components (by
	// container name) in an image that holds several: without, each
	// image's entrypoint is its component.
	Commands map[string]string
	// PullCredentials, if set, is a Docker config file's content the
	// pods pull their images with (the image pull Secret imagePullName).
	PullCredentials []byte
}

// imagePullName is the Secret with the registry credentials of a control
// plane's pods.
const imagePullName = "image-pull"

// imagePullSecrets names the image pull Secret, if there is one.
func (i ImageRefs) imagePullSecrets() []corev1.LocalObjectReference {
	if len(i.PullCredentials) == 0 {
		return nil
	}
	return []corev1.LocalObjectReference{{Name: imagePullName}}
}

// render holds what the objects are made of.
type render struct {
	spec   controlplane.Spec
	layout Layout
	images ImageRefs
	// secrets are the components' credentials, by component.
	secrets map[string]map[string][]byte
}

func (r render) ns() string { return r.layout.Namespace }

func (r render) tunnel() bool { return !r.spec.WithoutTunnel }

func (r render) replicas() (etcd, apiServers, controllers int32) {
	switch {
	case r.layout.etcdGrowing():
		// The rest follows once etcd has its three members.
		return int32(r.layout.EtcdJoined), 1, 1
	case r.spec.HighAvailability:
		return 3, 2, 2
	}
	return 1, 1, 1
}

func labels(component string) map[string]string {
	return map[string]string{LabelComponent: component, LabelPartOf: partOf}
}

func meta(namespace, name, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels(component)}
}

// Stages of the objects, applied in this order: each waits until the
// one before is rolled out, so an upgrade moves etcd first, then the API
// servers, then their clients, as upstream's version skew policy asks.
const (
	stageBase              = "base"
	stageEtcd              = etcdName
	stageAPIServer         = apiServerName
	stageControllerManager = controllerManagerName
	stageScheduler         = schedulerName
)

// objects lists the objects of one stage: the base (namespace, policies,
// Services) or a component's credentials, workload and disruption budget.
func (r render) objects(stage string) []runtime.Object {
	etcdN, apiN, ctlN := r.replicas()
	switch stage {
	case stageBase:
		out := []runtime.Object{
			&corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
				ObjectMeta: metav1.ObjectMeta{Name: r.ns(), Labels: map[string]string{LabelPartOf: partOf}}},
		}
		out = append(out, r.networkPolicies()...)
		if creds := r.images.PullCredentials; len(creds) > 0 {
			out = append(out, &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
				ObjectMeta: meta(r.ns(), imagePullName, imagePullName), Type: corev1.SecretTypeDockerConfigJson,
				Data: map[string][]byte{corev1.DockerConfigJsonKey: creds}})
		}
		return append(out, r.etcdService(), r.apiServerService())
	case stageEtcd:
		if r.layout.etcdGrowing() {
			// Member EtcdJoined is the one joining now.
			return []runtime.Object{r.secret(etcdName), r.etcdJoining(int32(r.layout.EtcdJoined))}
		}
		out := []runtime.Object{r.secret(etcdName), r.etcd(etcdN)}
		if r.spec.HighAvailability {
			out = append(out, pdb(r.ns(), etcdName, intstr.FromInt32(etcdN/2+1)))
		}
		return out
	case stageAPIServer:
		out := []runtime.Object{r.secret(apiServerName), r.apiServer(apiN)}
		if r.spec.HighAvailability {
			out = append(out, pdb(r.ns(), apiServerName, intstr.FromInt32(1)))
		}
		return out
	case stageControllerManager:
		return []runtime.Object{r.secret(controllerManagerName), r.controllerManager(ctlN)}
	case stageScheduler:
		if r.spec.WithoutScheduler {
			return nil
		}
		return []runtime.Object{r.secret(schedulerName), r.scheduler(ctlN)}
	}
	return nil
}

// allObjects lists every stage's objects.
func (r render) allObjects() []runtime.Object {
	var out []runtime.Object
	for _, stage := range []string{stageBase, stageEtcd, stageAPIServer, stageControllerManager, stageScheduler} {
		out = append(out, r.objects(stage)...)
	}
	return out
}

func pdb(namespace, component string, minAvailable intstr.IntOrString) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{TypeMeta: metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: meta(namespace, component, component),
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvailable,
			Selector: &metav1.LabelSelector{MatchLabels: labels(component)}}}
}

// networkPolicies keep every other namespace of the seed, other control
// planes included, out of this one; only the API server's and the
// tunnel's ports are open, to anyone (the host forwards clients and
// machines there through the node ports). The kubelet's probes come from
// the node itself, which the policy engines let through.
func (r render) networkPolicies() []runtime.Object {
	tm := metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"}
	ports := []networkingv1.NetworkPolicyPort{{Port: ptr.To(intstr.FromInt32(apiServerPort))}}
	if r.tunnel() {
		ports = append(ports, networkingv1.NetworkPolicyPort{Port: ptr.To(intstr.FromInt32(tunnelAgentPort))})
	}
	return []runtime.Object{
		&networkingv1.NetworkPolicy{TypeMeta: tm, ObjectMeta: metav1.ObjectMeta{Namespace: r.ns(), Name: "same-namespace-only", Labels: map[string]string{LabelPartOf: partOf}},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{}, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}}}}},
		&networkingv1.NetworkPolicy{TypeMeta: tm, ObjectMeta: metav1.ObjectMeta{Namespace: r.ns(), Name: "api-from-anywhere", Labels: map[string]string{LabelPartOf: partOf}},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: labels(apiServerName)}, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: ports}}}},
	}
}

func (r render) etcdService() *corev1.Service {
	return &corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}, ObjectMeta: meta(r.ns(), etcdName, etcdName),
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone, Selector: labels(etcdName),
			// Members find each other before any is ready.
			PublishNotReadyAddresses: true,
			Ports: []corev1.ServicePort{
				{Name: "client", Port: etcdClientPort, TargetPort: intstr.FromInt32(etcdClientPort)},
				{Name: "peer", Port: etcdPeerPort, TargetPort: intstr.FromInt32(etcdPeerPort)},
			}}}
}

func (r render) apiServerService() *corev1.Service {
	ports := []corev1.ServicePort{{Name: "https", Port: apiServerPort, TargetPort: intstr.FromInt32(apiServerPort)}}
	if r.tunnel() {
		ports = append(ports, corev1.ServicePort{Name: "tunnel", Port: tunnelAgentPort, TargetPort: intstr.FromInt32(tunnelAgentPort)})
	}
	svc := &corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}, ObjectMeta: meta(r.ns(), apiServerService, apiServerName),
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: labels(apiServerName), Ports: ports}}
	if e := r.layout.Service; e.LoadBalancer {
		// A load balancer's Service has node ports too: the host's
		// forwarders for the machines use them.
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
		svc.Annotations = e.Annotations
	}
	return svc
}

func file(name string) string { return pkiDir + "/" + name }

func certFile(name string) string { return file(name + ".crt") }

func keyFile(name string) string { return file(name + ".key") }

// podSecurity: no root, no privileges, nothing written outside volumes.
func podSecurity() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](nonRoot), RunAsGroup: ptr.To[int64](nonRoot), FSGroup: ptr.To[int64](nonRoot),
		RunAsNonRoot: ptr.To(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
}

func containerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
}

func resources(cpu, memory string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory)}}
}

func probe(scheme corev1.URIScheme, path string, port int32, failures int32) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Scheme: scheme, Path: path, Port: intstr.FromInt32(port)}},
		PeriodSeconds: 5, TimeoutSeconds: 3, FailureThreshold: failures}
}

// startupProbe gives a component up to five minutes to start before its
// liveness probe counts: on a busy seed an API server that has to read a
// large etcd (or wait for it) takes longer than the liveness probe's
// minute, and killing it then only starts it over.
func startupProbe(scheme corev1.URIScheme, path string, port int32) *corev1.Probe {
	return probe(scheme, path, port, 60)
}

// spread prefers the component's pods on different seed nodes.
func spread(component string) *corev1.Affinity {
	return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
		Weight: 100, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: corev1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: labels(component)}}}}}}
}

// podTemplate is a pod of component with its credentials mounted at
// pkiDir and an empty /tmp; the pods get no token of the seed's API.
func (r render) podTemplate(component string, containers []corev1.Container, volumes ...corev1.Volume) corev1.PodTemplateSpec {
	// A restart (AnnotationRestartedAt) is set by another field manager
	// and survives this one's applies.
	annotations := map[string]string{annotationCredentials: digest(r.secrets[component])}
	volumes = append([]corev1.Volume{
		{Name: "credentials", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: r.secretName(component), DefaultMode: ptr.To[int32](0o440)}}},
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}, volumes...)
	for i := range containers {
		c := &containers[i]
		c.ImagePullPolicy = corev1.PullIfNotPresent
		if cmd := r.images.Commands[c.Name]; cmd != "" {
			c.Command = []string{cmd}
		}
		c.SecurityContext = containerSecurity()
		c.VolumeMounts = append([]corev1.VolumeMount{{Name: "credentials", MountPath: pkiDir, ReadOnly: true}, {Name: "tmp", MountPath: "/tmp"}}, c.VolumeMounts...)
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels(component), Annotations: annotations},
		Spec: corev1.PodSpec{
			Containers:                    containers,
			Volumes:                       volumes,
			SecurityContext:               podSecurity(),
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			Affinity:                      spread(component),
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			ImagePullSecrets:              r.images.imagePullSecrets(),
		},
	}
}

func podNameEnv() corev1.EnvVar {
	return corev1.EnvVar{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}
}

// etcdJoining is the StatefulSet while member i joins a running etcd of
// i members: one more replica, started as an existing member, and a
// partition that keeps the members before it as they are.
func (r render) etcdJoining(i int32) *appsv1.StatefulSet {
	s := r.etcdMembers(i+1, "existing")
	s.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To(i)}}
	return s
}

func (r render) etcd(replicas int32) *appsv1.StatefulSet {
	state := "new"
	if r.layout.EtcdGrown {
		state = "existing"
	}
	s := r.etcdMembers(replicas, state)
	// Applied as a whole: a partition left from growing goes.
	s.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](0)}}
	return s
}

// etcdMembers is the StatefulSet of an etcd of the given members, which
// start with --initial-cluster-state=state (members that have data
// ignore it).
func (r render) etcdMembers(replicas int32, state string) *appsv1.StatefulSet {
	var initial []string
	for i := int32(0); i < replicas; i++ {
		initial = append(initial, fmt.Sprintf("%s-%d=https://%s:%d", etcdName, i, r.layout.etcdHost(int(i)), etcdPeerPort))
	}
	self := fmt.Sprintf("$(POD_NAME).%s.%s.svc", etcdName, r.ns())
	container := corev1.Container{
		Name:  etcdName,
		Image: r.images.Etcd,
		Env:   []corev1.EnvVar{podNameEnv()},
		Args: []string{
			"--name=$(POD_NAME)",
			"--data-dir=" + etcdVolumeDir + "/" + etcdDataName,
			fmt.Sprintf("--listen-client-urls=https://0.0.0.0:%d", etcdClientPort),
			fmt.Sprintf("--advertise-client-urls=https://%s:%d", self, etcdClientPort),
			fmt.Sprintf("--listen-peer-urls=https://0.0.0.0:%d", etcdPeerPort),
			fmt.Sprintf("--initial-advertise-peer-urls=https://%s:%d", self, etcdPeerPort),
			fmt.Sprintf("--listen-metrics-urls=http://0.0.0.0:%d", etcdMetricsPort),
			"--initial-cluster=" + strings.Join(initial, ","),
			"--initial-cluster-state=" + state,
			"--initial-cluster-token=" + r.ns(),
			"--cert-file=" + certFile(pki.EtcdServerName),
			"--key-file=" + keyFile(pki.EtcdServerName),
			"--trusted-ca-file=" + certFile(pki.EtcdCAName),
			"--client-cert-auth=true",
			"--peer-cert-file=" + certFile(pki.EtcdPeerName),
			"--peer-key-file=" + keyFile(pki.EtcdPeerName),
			"--peer-trusted-ca-file=" + certFile(pki.EtcdCAName),
			"--peer-client-cert-auth=true",
			"--log-level=warn",
		},
		Ports: []corev1.ContainerPort{
			{Name: "client", ContainerPort: etcdClientPort}, {Name: "peer", ContainerPort: etcdPeerPort}, {Name: "metrics", ContainerPort: etcdMetricsPort},
		},
		ReadinessProbe: probe(corev1.URISchemeHTTP, "/health", etcdMetricsPort, 3),
		LivenessProbe:  probe(corev1.URISchemeHTTP, "/livez", etcdMetricsPort, 12),
		StartupProbe:   startupProbe(corev1.URISchemeHTTP, "/livez", etcdMetricsPort),
		Resources:      resources("50m", "64Mi"),
		VolumeMounts:   []corev1.VolumeMount{{Name: etcdVolumeClaim, MountPath: etcdVolumeDir}},
	}
	return &appsv1.StatefulSet{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"}, ObjectMeta: meta(r.ns(), etcdName, etcdName),
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To(replicas),
			ServiceName: etcdName,
			Selector:    &metav1.LabelSelector{MatchLabels: labels(etcdName)},
			// Every member of a new cluster must start before any is
			// ready (they elect a leader together).
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Template:            r.podTemplate(etcdName, []corev1.Container{container}),
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: etcdVolumeClaim, Labels: labels(etcdName)},
				Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
			}},
			// The data stays when the StatefulSet goes (it goes with
			// the namespace).
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType, WhenScaled: appsv1.RetainPersistentVolumeClaimRetentionPolicyType},
		}}
}

// apiServerShutdownDelay keeps a stopping API server serving while the
// node ports and the host's load balancers stop sending it connections:
// the pod's endpoint has to go through the seed's endpoint-slice
// controller to every node's kube-proxy, which on a busy seed took longer
// than 5s (new connections met a closed port). The pod's grace period
// (30s) leaves the other half for requests in flight.
const apiServerShutdownDelay = "15s"

// tunnelStopDelay keeps the tunnel server beside a stopping API server
// (same pod) up as long as that API server still serves (with more than
// one replica): its webhooks, logs and exec go through it.
const tunnelStopDelay = 15

func tunnelLifecycle(replicas int32) *corev1.Lifecycle {
	if replicas <= 1 {
		return nil
	}
	return &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: tunnelStopDelay}}}
}

func (r render) apiServerArgs(replicas int32) []string {
	var etcdServers []string
	etcdN, _, _ := r.replicas()
	for i := 0; i < int(etcdN); i++ {
		etcdServers = append(etcdServers, fmt.Sprintf("https://%s:%d", r.layout.etcdHost(i), etcdClientPort))
	}
	args := []string{
		"--advertise-address=" + r.layout.Gateway(),
		"--bind-address=0.0.0.0",
		fmt.Sprintf("--secure-port=%d", apiServerPort),
		"--etcd-servers=" + strings.Join(etcdServers, ","),
		"--etcd-cafile=" + certFile(pki.EtcdCAName),
		"--etcd-certfile=" + certFile(pki.APIServerEtcdName),
		"--etcd-keyfile=" + keyFile(pki.APIServerEtcdName),
		"--client-ca-file=" + certFile(pki.CABundleName),
		"--tls-cert-file=" + certFile(pki.APIServerName),
		"--tls-private-key-file=" + keyFile(pki.APIServerName),
		"--kubelet-client-certificate=" + certFile(pki.APIServerKubeletName),
		"--kubelet-client-key=" + keyFile(pki.APIServerKubeletName),
		"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-signing-key-file=" + keyFile(pki.ServiceAccountName),
		"--service-cluster-ip-range=" + r.spec.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--enable-bootstrap-token-auth=true",
		"--encryption-provider-config=" + file(pki.EncryptionConfigFile),
		"--requestheader-client-ca-file=" + certFile(pki.FrontProxyCAName),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--proxy-client-cert-file=" + certFile(pki.FrontProxyClientName),
		"--proxy-client-key-file=" + keyFile(pki.FrontProxyClientName),
		"--allow-privileged=true",
		"--profiling=false",
		// Lotse points the kubernetes Service at the node endpoint.
		"--endpoint-reconciler-type=none",
		"--shutdown-watch-termination-grace-period=2s",
	}
	for _, k := range r.verifyKeys() {
		args = append(args, "--service-account-key-file="+file(k))
	}
	if r.tunnel() {
		args = append(args, "--egress-selector-config-file="+file(egressSelectorFile))
	}
	if replicas > 1 {
		args = append(args, "--shutdown-delay-duration="+apiServerShutdownDelay, "--shutdown-send-retry-after=true")
	}
	return args
}

// verifyKeys are the service-account public keys in the API server's
// Secret: the current one and, during a rotation, the other.
func (r render) verifyKeys() []string {
	var out []string
	for name := range r.secrets[apiServerName] {
		if strings.HasSuffix(name, ".pub") {
			out = append(out, name)
		}
	}
	sortStrings(out)
	return out
}

const egressSelectorFile = "egress-selector.yaml"

// egressSelector sends the API server's traffic to the cluster (kubelets,
// webhooks, aggregated APIs) through the tunnel server in its pod.
func egressSelector() string {
	return fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: GRPC
    transport:
      uds:
        udsName: %s
`, tunnelSocket)
}

// apiServerReadyPath is the API servers' readiness: everything but etcd.
// Every replica shares the same etcd, so an etcd election (a drained seed
// node that held the leader) would take them all out of the Service at
// once, and clients would be refused where they could have waited the
// election out. A stopping API server still leaves at its first failed
// probe (its shutdown check), before it stops serving.
const apiServerReadyPath = "/readyz?exclude=etcd&exclude=etcd-readiness"

func (r render) apiServer(replicas int32) *appsv1.Deployment {
	containers := []corev1.Container{{
		Name:           apiServerName,
		Image:          r.images.APIServer,
		Args:           r.apiServerArgs(replicas),
		Ports:          []corev1.ContainerPort{{Name: "https", ContainerPort: apiServerPort}},
		ReadinessProbe: probe(corev1.URISchemeHTTPS, apiServerReadyPath, apiServerPort, 1),
		LivenessProbe:  probe(corev1.URISchemeHTTPS, "/livez", apiServerPort, 12),
		StartupProbe:   startupProbe(corev1.URISchemeHTTPS, "/livez", apiServerPort),
		Resources:      resources("100m", "256Mi"),
	}}
	var volumes []corev1.Volume
	if r.tunnel() {
		containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "tunnel", MountPath: tunnelDir}}
		containers = append(containers, corev1.Container{
			Name:  tunnelServerName,
			Image: r.images.TunnelServer,
			Env:   []corev1.EnvVar{podNameEnv()},
			Args: []string{
				"--mode=grpc",
				"--uds-name=" + tunnelSocket,
				"--delete-existing-uds-file=true",
				"--server-port=0",
				fmt.Sprintf("--agent-port=%d", tunnelAgentPort),
				"--agent-bind-address=0.0.0.0",
				fmt.Sprintf("--admin-port=%d", tunnelAdminPort),
				"--admin-bind-address=127.0.0.1",
				fmt.Sprintf("--health-port=%d", tunnelHealthPort),
				"--health-bind-address=0.0.0.0",
				"--cluster-cert=" + certFile(pki.KonnectivityServerName),
				"--cluster-key=" + keyFile(pki.KonnectivityServerName),
				"--cluster-ca-cert=" + certFile(pki.KonnectivityCAName),
				fmt.Sprintf("--server-count=%d", replicas),
				"--server-id=$(POD_NAME)",
				"--proxy-strategies=destHost,default",
				"--keepalive-time=30s",
				"--frontend-keepalive-time=30s",
			},
			Ports:          []corev1.ContainerPort{{Name: "tunnel", ContainerPort: tunnelAgentPort}},
			ReadinessProbe: probe(corev1.URISchemeHTTP, "/healthz", tunnelHealthPort, 3),
			LivenessProbe:  probe(corev1.URISchemeHTTP, "/healthz", tunnelHealthPort, 12),
			StartupProbe:   startupProbe(corev1.URISchemeHTTP, "/healthz", tunnelHealthPort),
			Lifecycle:      tunnelLifecycle(replicas),
			Resources:      resources("10m", "32Mi"),
			VolumeMounts:   []corev1.VolumeMount{{Name: "tunnel", MountPath: tunnelDir}},
		})
		volumes = append(volumes, corev1.Volume{Name: "tunnel", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	return deployment(r.ns(), apiServerName, replicas, r.podTemplate(apiServerName, containers, volumes...))
}

// deployment rolls its pods one at a time, each new one ready before an
// old one goes.
func deployment(namespace, component string, replicas int32, template corev1.PodTemplateSpec) *appsv1.Deployment {
	return &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}, ObjectMeta: meta(namespace, component, component),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels(component)},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1))}},
			Template: template,
		}}
}

func (r render) controllerManager(replicas int32) *appsv1.Deployment {
	kubeconfig := file(kubeconfigFile)
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=0.0.0.0",
		fmt.Sprintf("--secure-port=%d", controllerMgrPort),
		"--tls-cert-file=" + certFile(pki.ControllerMgrServing),
		"--tls-private-key-file=" + keyFile(pki.ControllerMgrServing),
		"--client-ca-file=" + certFile(pki.CABundleName),
		"--requestheader-client-ca-file=" + certFile(pki.FrontProxyCAName),
		"--cluster-name=" + r.spec.Name,
		"--cluster-signing-cert-file=" + certFile(pki.CAName),
		"--cluster-signing-key-file=" + keyFile(pki.CAName),
		"--root-ca-file=" + certFile(pki.CABundleName),
		"--service-account-private-key-file=" + keyFile(pki.ServiceAccountName),
		"--use-service-account-credentials=true",
		"--controllers=" + r.spec.ControllersFlag(),
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + r.spec.PodCIDR,
		"--node-cidr-mask-size=24",
		"--service-cluster-ip-range=" + r.spec.ServiceCIDR,
		"--flex-volume-plugin-dir=/tmp/flexvolume",
		"--profiling=false",
		// Always: a rolling update runs two for a moment.
		"--leader-elect=true",
	}
	return deployment(r.ns(), controllerManagerName, replicas, r.podTemplate(controllerManagerName, []corev1.Container{{
		Name: controllerManagerName, Image: r.images.ControllerManager, Args: args,
		LivenessProbe: probe(corev1.URISchemeHTTPS, "/healthz", controllerMgrPort, 12),
		StartupProbe:  startupProbe(corev1.URISchemeHTTPS, "/healthz", controllerMgrPort),
		Resources:     resources("50m", "96Mi"),
	}}))
}

func (r render) scheduler(replicas int32) *appsv1.Deployment {
	kubeconfig := file(kubeconfigFile)
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=0.0.0.0",
		fmt.Sprintf("--secure-port=%d", schedulerPort),
		"--tls-cert-file=" + certFile(pki.SchedulerServing),
		"--tls-private-key-file=" + keyFile(pki.SchedulerServing),
		"--client-ca-file=" + certFile(pki.CABundleName),
		"--requestheader-client-ca-file=" + certFile(pki.FrontProxyCAName),
		"--profiling=false",
		"--leader-elect=true",
	}
	return deployment(r.ns(), schedulerName, replicas, r.podTemplate(schedulerName, []corev1.Container{{
		Name: schedulerName, Image: r.images.Scheduler, Args: args,
		LivenessProbe: probe(corev1.URISchemeHTTPS, "/healthz", schedulerPort, 12),
		StartupProbe:  startupProbe(corev1.URISchemeHTTPS, "/healthz", schedulerPort),
		Resources:     resources("20m", "48Mi"),
	}}))
}

// kubeconfigFile is a component's kubeconfig in its Secret.
const kubeconfigFile = "kubeconfig"

// credentialFiles are the PKI files each component's Secret holds (by
// their names in the PKI directory).
func credentialFiles(spec controlplane.Spec, p pki.ClusterPKI) map[string][]string {
	pair := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, p.Cert(n), p.Key(n))
		}
		return out
	}
	etcd := append(pair(pki.EtcdServerName, pki.EtcdPeerName), p.Cert(pki.EtcdCAName))
	api := append(pair(pki.APIServerName, pki.APIServerKubeletName, pki.APIServerEtcdName, pki.FrontProxyClientName),
		p.TrustBundle(), p.Cert(pki.EtcdCAName), p.Cert(pki.FrontProxyCAName), p.Key(pki.ServiceAccountName), p.Path(pki.EncryptionConfigFile))
	api = append(api, p.ServiceAccountVerifyKeys()...)
	if !spec.WithoutTunnel {
		api = append(api, append(pair(pki.KonnectivityServerName), p.Cert(pki.KonnectivityCAName))...)
	}
	cm := append(pair(pki.ControllerMgrServing, pki.CAName), p.TrustBundle(), p.Cert(pki.FrontProxyCAName), p.Key(pki.ServiceAccountName))
	sched := append(pair(pki.SchedulerServing), p.TrustBundle(), p.Cert(pki.FrontProxyCAName))
	return map[string][]string{etcdName: etcd, apiServerName: api, controllerManagerName: cm, schedulerName: sched}
}

// baseName is a file's key in a Secret.
func baseName(path string) string { return filepath.Base(path) }
