package seed

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/releases/releasestest"
)

// rendered renders a control plane from a real PKI in a temporary directory.
func rendered(t *testing.T, spec controlplane.Spec) (render, []runtime.Object) {
	t.Helper()
	l := Layout{Seed: "s", Namespace: NamespaceFor("owner", spec.Key), NodesCIDR: "10.250.3.0/24", APIPort: 30443, TunnelPort: 30444, HighAvailability: spec.HighAvailability}
	p, err := pki.EnsureCluster(t.TempDir(), pki.ClusterParams{Name: spec.Name, ServiceCIDR: "10.96.0.0/16", APIServerHosts: l.APIServerHosts(), EtcdHosts: l.EtcdHosts()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := secrets(spec, l, p)
	if err != nil {
		t.Fatal(err)
	}
	r := render{spec: spec, layout: l, images: ImageRefs{Etcd: "e", APIServer: "a", ControllerManager: "c", Scheduler: "s", TunnelServer: "t"}, secrets: s}
	return r, r.allObjects()
}

func find[T runtime.Object](objs []runtime.Object, name string) (T, bool) {
	var zero T
	for _, o := range objs {
		if t, ok := o.(T); ok {
			if m, ok := any(t).(interface{ GetName() string }); ok && m.GetName() == name {
				return t, true
			}
		}
	}
	return zero, false
}

func args(c corev1.Container) string { return strings.Join(c.Args, " ") }

// podTemplates are the pod templates of the Deployments and StatefulSets.
func podTemplates(objs []runtime.Object) []corev1.PodTemplateSpec {
	var out []corev1.PodTemplateSpec
	for _, o := range objs {
		switch w := o.(type) {
		case *appsv1.Deployment:
			out = append(out, w.Spec.Template)
		case *appsv1.StatefulSet:
			out = append(out, w.Spec.Template)
		}
	}
	return out
}

func TestRender(t *testing.T) {
	tests := []struct {
		name string
		spec controlplane.Spec
		// etcd members, API servers, and whether the tunnel is there.
		members, apiServers int32
		tunnel              bool
	}{
		{"single", controlplane.Spec{Key: "clusters/default/a", Name: "a", ServiceCIDR: "10.96.0.0/16", PodCIDR: "10.244.0.0/16"}, 1, 1, true},
		{"highly available", controlplane.Spec{Key: "clusters/default/b", Name: "b", HighAvailability: true, ServiceCIDR: "10.96.0.0/16", PodCIDR: "10.244.0.0/16"}, 3, 2, true},
		{"without tunnel and scheduler", controlplane.Spec{Key: "clusters/default/c", Name: "c", WithoutTunnel: true, WithoutScheduler: true, ServiceCIDR: "10.96.0.0/16", PodCIDR: "10.244.0.0/16"}, 1, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, objs := rendered(t, tt.spec)
			ns := r.ns()

			etcd, ok := find[*appsv1.StatefulSet](objs, etcdName)
			if !ok || *etcd.Spec.Replicas != tt.members || etcd.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
				t.Fatalf("etcd StatefulSet: %+v", etcd)
			}
			initial := regexp.MustCompile(`--initial-cluster=(\S+)`).FindStringSubmatch(args(etcd.Spec.Template.Spec.Containers[0]))
			if initial == nil || int32(strings.Count(initial[1], "=https://")) != tt.members || !strings.Contains(initial[1], "etcd-0=https://etcd-0.etcd."+ns+".svc:2380") {
				t.Errorf("etcd --initial-cluster: %v", initial)
			}

			api, ok := find[*appsv1.Deployment](objs, apiServerName)
			if !ok || *api.Spec.Replicas != tt.apiServers {
				t.Fatalf("API server Deployment: %+v", api)
			}
			apiArgs := args(api.Spec.Template.Spec.Containers[0])
			if got := strings.Count(apiArgs, ".etcd."+ns+".svc:2379"); int32(got) != tt.members {
				t.Errorf("--etcd-servers names %d members, want %d: %s", got, tt.members, apiArgs)
			}
			if got := strings.Contains(apiArgs, "--shutdown-delay-duration"); got != (tt.apiServers > 1) {
				t.Errorf("graceful hand-over flags: %v with %d API servers", got, tt.apiServers)
			}
			hasTunnel := len(api.Spec.Template.Spec.Containers) == 2
			if hasTunnel != tt.tunnel || strings.Contains(apiArgs, "--egress-selector-config-file") != tt.tunnel {
				t.Errorf("tunnel: sidecar %v, egress selector %v; want %v", hasTunnel, strings.Contains(apiArgs, "egress"), tt.tunnel)
			}
			if hasTunnel && !strings.Contains(args(api.Spec.Template.Spec.Containers[1]), fmt.Sprintf("--server-count=%d", tt.apiServers)) {
				t.Errorf("tunnel server count: %s", args(api.Spec.Template.Spec.Containers[1]))
			}
			// The tunnel beside a stopping API server serves as long as it.
			if hasTunnel {
				lc := api.Spec.Template.Spec.Containers[1].Lifecycle
				sleeps := lc != nil && lc.PreStop != nil && lc.PreStop.Sleep != nil &&
					apiServerShutdownDelay == fmt.Sprintf("%ds", lc.PreStop.Sleep.Seconds)
				if sleeps != (tt.apiServers > 1) {
					t.Errorf("tunnel preStop %+v with %d API servers; want a sleep of %s with more than one", lc, tt.apiServers, apiServerShutdownDelay)
				}
			}
			svc, _ := find[*corev1.Service](objs, apiServerService)
			if svc == nil || svc.Spec.Type != corev1.ServiceTypeNodePort || (len(svc.Spec.Ports) == 2) != tt.tunnel {
				t.Errorf("API Service: %+v", svc)
			}
			_, hasScheduler := find[*appsv1.Deployment](objs, schedulerName)
			if hasScheduler == tt.spec.WithoutScheduler {
				t.Errorf("scheduler rendered: %v, WithoutScheduler %v", hasScheduler, tt.spec.WithoutScheduler)
			}
			_, hasPDB := find[*policyv1.PodDisruptionBudget](objs, apiServerName)
			if hasPDB != tt.spec.HighAvailability {
				t.Errorf("PodDisruptionBudget: %v", hasPDB)
			}
			if _, ok := find[*networkingv1.NetworkPolicy](objs, "same-namespace-only"); !ok {
				t.Error("no default-deny policy")
			}
		})
	}
}

// Every pod runs unprivileged, without a token of the seed's API, with
// only its own component's credentials.
func TestRenderLeastPrivilege(t *testing.T) {
	r, objs := rendered(t, controlplane.Spec{Key: "clusters/default/a", Name: "a", HighAvailability: true, ServiceCIDR: "10.96.0.0/16"})
	templates := podTemplates(objs)
	if len(templates) != 4 {
		t.Fatalf("%d workloads, want 4", len(templates))
	}
	for _, tpl := range templates {
		component := tpl.Labels[LabelComponent]
		spec := tpl.Spec
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: mounts a token of the seed", component)
		}
		if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: may run as root", component)
		}
		for _, c := range spec.Containers {
			if c.SecurityContext == nil || *c.SecurityContext.AllowPrivilegeEscalation || !*c.SecurityContext.ReadOnlyRootFilesystem {
				t.Errorf("%s/%s: security context %+v", component, c.Name, c.SecurityContext)
			}
		}
		if got := spec.Volumes[0].Secret.SecretName; got != r.secretName(component) {
			t.Errorf("%s mounts Secret %s", component, got)
		}
	}
	has := func(component, file string) bool { _, ok := r.secrets[component][file]; return ok }
	for _, tt := range []struct {
		component, file string
		want            bool
	}{
		{controllerManagerName, "ca.key", true},
		{apiServerName, "ca.key", false},
		{etcdName, "ca.key", false},
		{etcdName, "apiserver.key", false},
		{etcdName, "etcd-server.key", true},
		{apiServerName, "etcd-server.key", false},
		{apiServerName, "apiserver-etcd-client.key", true},
		{schedulerName, "sa.key", false},
		{controllerManagerName, "sa.key", true},
		{schedulerName, kubeconfigFile, true},
		{apiServerName, egressSelectorFile, true},
	} {
		if got := has(tt.component, tt.file); got != tt.want {
			t.Errorf("Secret of %s has %s: %v, want %v", tt.component, tt.file, got, tt.want)
		}
	}
	if kc := string(r.secrets[schedulerName][kubeconfigFile]); !strings.Contains(kc, r.layout.InSeedServer()) {
		t.Errorf("the scheduler's kubeconfig does not point at the in-seed Service %s", r.layout.InSeedServer())
	}
}

// A changed credential changes the pod template, so the pods roll.
func TestRenderCredentialsRoll(t *testing.T) {
	r, objs := rendered(t, controlplane.Spec{Key: "clusters/default/a", Name: "a", ServiceCIDR: "10.96.0.0/16"})
	before, _ := find[*appsv1.Deployment](objs, apiServerName)
	r.secrets[apiServerName]["apiserver.crt"] = []byte("reissued")
	after, _ := find[*appsv1.Deployment](r.allObjects(), apiServerName)
	if before.Spec.Template.Annotations[annotationCredentials] == after.Spec.Template.Annotations[annotationCredentials] ||
		before.Spec.Template.Spec.Volumes[0].Secret.SecretName == after.Spec.Template.Spec.Volumes[0].Secret.SecretName {
		t.Error("a reissued certificate leaves the API server's pod template as it was")
	}
	cmBefore, _ := find[*appsv1.Deployment](objs, controllerManagerName)
	cmAfter, _ := find[*appsv1.Deployment](r.allObjects(), controllerManagerName)
	if cmBefore.Spec.Template.Annotations[annotationCredentials] != cmAfter.Spec.Template.Annotations[annotationCredentials] {
		t.Error("the controller-manager rolls for a certificate it does not have")
	}
}

func TestNamespaceFor(t *testing.T) {
	dns := regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	long := "clusters/" + strings.Repeat("n", 63) + "/" + strings.Repeat("c", 63)
	seen := map[string]bool{}
	for _, tt := range []struct{ owner, key string }{
		{"o1", "clusters/default/a"}, {"o2", "clusters/default/a"}, {"o1", "clusters/default/b"}, {"o1", long}, {"o1", "clusters/Team_X/a.b"},
	} {
		ns := NamespaceFor(tt.owner, tt.key)
		if len(ns) > 63 || !dns.MatchString(ns) {
			t.Errorf("NamespaceFor(%q, %q) = %q: not a DNS label", tt.owner, tt.key, ns)
		}
		if seen[ns] {
			t.Errorf("NamespaceFor(%q, %q) = %q twice", tt.owner, tt.key, ns)
		}
		seen[ns] = true
	}
	if ns := NamespaceFor("o", "clusters/default/a"); !strings.HasPrefix(ns, "lotse-cp-default-a-") {
		t.Errorf("namespace %q does not say whose it is", ns)
	}
}

// With one image for every component (the manager's, which holds the
// releases), each container runs its component's binary from it.
func TestRenderOneImage(t *testing.T) {
	spec := controlplane.Spec{Key: "clusters/default/one", Name: "one", ServiceCIDR: "10.96.0.0/16", PodCIDR: "10.244.0.0/16",
		Binaries: releasestest.Binaries(t)}
	r, _ := rendered(t, spec)
	b := &Backend{ControlPlaneImage: "registry.example/lotse-manager:v1"}
	r.images = b.imageRefs(spec.Binaries, nil)
	seen := map[string]bool{}
	for _, tpl := range podTemplates(r.allObjects()) {
		for _, c := range tpl.Spec.Containers {
			seen[c.Name] = true
			if c.Image != b.ControlPlaneImage {
				t.Errorf("container %s runs image %s, want %s", c.Name, c.Image, b.ControlPlaneImage)
			}
			if len(c.Command) != 1 || c.Command[0] != spec.Binaries.Path(c.Name) {
				t.Errorf("container %s runs %q, want its release binary %q", c.Name, c.Command, spec.Binaries.Path(c.Name))
			}
		}
	}
	for _, want := range []string{etcdName, apiServerName, tunnelServerName, controllerManagerName, schedulerName} {
		if !seen[want] {
			t.Errorf("no container %s rendered", want)
		}
	}
	// Without it, each image's entrypoint is its component.
	r, _ = rendered(t, spec)
	for _, o := range r.allObjects() {
		if d, ok := o.(*appsv1.Deployment); ok {
			for _, c := range d.Spec.Template.Spec.Containers {
				if len(c.Command) != 0 {
					t.Errorf("container %s has command %q with per-component images", c.Name, c.Command)
				}
			}
		}
	}
}

// The API servers' Service: node ports by default (and for layouts from
// before the choice), a load balancer with the seed's annotations when the
// seed has one; its address is then the endpoint and in the certificate.
func TestAPIServerExposure(t *testing.T) {
	internal := map[string]string{"lb.lotse.dev/internal": "true"}
	tests := []struct {
		name        string
		service     controlplane.ServiceExposure
		address     string
		wantType    corev1.ServiceType
		wantEnd     string
		annotations map[string]string
	}{
		{"node ports", controlplane.ServiceExposure{}, "", corev1.ServiceTypeNodePort, "https://127.0.0.1:30443", nil},
		{"load balancer, no address yet", controlplane.ServiceExposure{LoadBalancer: true, Annotations: internal}, "", corev1.ServiceTypeLoadBalancer, "", internal},
		{"load balancer", controlplane.ServiceExposure{LoadBalancer: true}, "10.254.254.7", corev1.ServiceTypeLoadBalancer, "https://10.254.254.7:6443", nil},
		{"load balancer by name", controlplane.ServiceExposure{LoadBalancer: true}, "api.seed.example", corev1.ServiceTypeLoadBalancer, "https://api.seed.example:6443", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := Layout{Namespace: "ns", NodesCIDR: "10.250.3.0/24", APIPort: 30443, Service: tt.service, ExternalAddress: tt.address}
			r := render{spec: controlplane.Spec{Key: "clusters/default/a", Name: "a"}, layout: l}
			svc, ok := find[*corev1.Service](r.objects(stageBase), apiServerService)
			if !ok || svc.Spec.Type != tt.wantType || len(svc.Spec.Ports) != 2 {
				t.Fatalf("API Service: %+v", svc)
			}
			if fmt.Sprint(svc.Annotations) != fmt.Sprint(tt.annotations) {
				t.Errorf("annotations %v, want %v", svc.Annotations, tt.annotations)
			}
			if got := l.Endpoint(); got != tt.wantEnd {
				t.Errorf("endpoint %s, want %s", got, tt.wantEnd)
			}
			hosts := strings.Join(l.APIServerHosts(), " ")
			if tt.address != "" && !strings.Contains(hosts, tt.address) {
				t.Errorf("certificate names %s, not the load balancer's %s", hosts, tt.address)
			}
			if l.behindLoadBalancer() != tt.service.LoadBalancer {
				t.Errorf("behind a load balancer: %v", l.behindLoadBalancer())
			}
		})
	}
}

// exposureConnectorFake answers a seed's API server Service setting; it
// has no client configuration.
type exposureConnectorFake struct{ exposure controlplane.ServiceExposure }

func (f exposureConnectorFake) Config(context.Context, string) (*rest.Config, error) {
	return nil, errors.New("no seed behind this fake")
}

func (f exposureConnectorFake) APIServerService(context.Context, string) (controlplane.ServiceExposure, error) {
	return f.exposure, nil
}

// Until the API server's certificate exists, a changed seed setting
// reaches a waiting control plane (a cluster stuck on a seed without load
// balancers goes on once the seed says NodePort); after, it stays.
func TestExposureFollowsSeedUntilCertificate(t *testing.T) {
	tests := []struct {
		name     string
		recorded controlplane.ServiceExposure
		seed     controlplane.ServiceExposure
		issued   bool
		want     controlplane.ServiceExposure
	}{
		{"waiting for an address, seed now says NodePort", controlplane.ServiceExposure{LoadBalancer: true}, controlplane.ServiceExposure{}, false, controlplane.ServiceExposure{}},
		{"certificate issued: the recorded exposure stays", controlplane.ServiceExposure{}, controlplane.ServiceExposure{LoadBalancer: true}, true, controlplane.ServiceExposure{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &Backend{StateDir: t.TempDir(), Seeds: exposureConnectorFake{tt.seed}}
			key := "clusters/default/a"
			if err := b.saveLayout(key, Layout{Seed: "s", Namespace: "ns", APIPort: 30443, Service: tt.recorded}); err != nil {
				t.Fatal(err)
			}
			if tt.issued {
				if _, err := pki.EnsureCluster(b.PKI(key).Dir, pki.ClusterParams{Name: "a", ServiceCIDR: "10.96.0.0/16"}); err != nil {
					t.Fatal(err)
				}
			}
			l, _ := b.LoadLayout(key)
			got, msg, err := b.ensureExternalAddress(context.Background(), nil, controlplane.Spec{Key: key, Name: "a"}, l)
			if err != nil || msg != "" {
				t.Fatalf("error %v, message %q", err, msg)
			}
			onDisk, _ := b.LoadLayout(key)
			if !sameExposure(got.Service, tt.want) || !sameExposure(onDisk.Service, tt.want) {
				t.Errorf("exposure %+v (on disk %+v), want %+v", got.Service, onDisk.Service, tt.want)
			}
		})
	}
}

// A load balancer that gives the API servers' Service a new address is
// followed, and the certificate issued again names it; one that has lost
// its address for now, or a Service deleted, keeps the recorded address.
func TestExternalAddressFollowsLoadBalancer(t *testing.T) {
	const recorded = "192.0.2.10"
	service := func(ingress ...corev1.LoadBalancerIngress) *corev1.Service {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: apiServerService, Namespace: "ns"}}
		svc.Status.LoadBalancer.Ingress = ingress
		return svc
	}
	tests := []struct {
		name string
		svc  *corev1.Service
		want string
	}{
		{"the same address", service(corev1.LoadBalancerIngress{IP: recorded}), recorded},
		{"a new address", service(corev1.LoadBalancerIngress{IP: "198.51.100.7"}), "198.51.100.7"},
		{"a host name", service(corev1.LoadBalancerIngress{Hostname: "api.lb.example"}), "api.lb.example"},
		{"no address for now", service(), recorded},
		{"the Service deleted", nil, recorded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &Backend{StateDir: t.TempDir(), Seeds: exposureConnectorFake{controlplane.ServiceExposure{LoadBalancer: true}}}
			key := "clusters/default/a"
			spec := controlplane.Spec{Key: key, Name: "a", ServiceCIDR: "10.96.0.0/16"}
			l := Layout{Seed: "s", Namespace: "ns", NodesCIDR: "10.250.3.0/24", APIPort: 30443, Service: controlplane.ServiceExposure{LoadBalancer: true}, ExternalAddress: recorded}
			if err := b.saveLayout(key, l); err != nil {
				t.Fatal(err)
			}
			if _, err := b.ensurePKI(spec, l); err != nil {
				t.Fatal(err)
			}
			kube := fake.NewClientset()
			if tt.svc != nil {
				kube = fake.NewClientset(tt.svc)
			}
			got, msg, err := b.ensureExternalAddress(context.Background(), &seedClient{kube: kube}, spec, l)
			if err != nil || msg != "" {
				t.Fatalf("error %v, message %q", err, msg)
			}
			onDisk, _ := b.LoadLayout(key)
			if got.ExternalAddress != tt.want || onDisk.ExternalAddress != tt.want {
				t.Fatalf("address %q (on disk %q), want %q", got.ExternalAddress, onDisk.ExternalAddress, tt.want)
			}
			if want := "https://" + net.JoinHostPort(tt.want, "6443"); got.Endpoint() != want {
				t.Errorf("endpoint %s, want %s", got.Endpoint(), want)
			}
			p, err := b.ensurePKI(spec, got)
			if err != nil {
				t.Fatal(err)
			}
			cert := readLeaf(t, p.Cert(pki.APIServerName))
			if err := cert.VerifyHostname(tt.want); err != nil {
				t.Errorf("the API server's certificate: %v", err)
			}
			kc, err := os.ReadFile(p.Kubeconfig(pki.AdminName))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(kc), got.Endpoint()) {
				t.Errorf("the admin kubeconfig does not name %s", got.Endpoint())
			}
		})
	}
}

// The image pull Secret goes once the manager has no pull credentials,
// and stays while it has them.
func TestPruneImagePullSecret(t *testing.T) {
	spec := controlplane.Spec{Key: "clusters/default/pulled", Name: "pulled", ServiceCIDR: "10.96.0.0/16", PodCIDR: "10.244.0.0/16",
		Binaries: releasestest.Binaries(t)}
	for _, tc := range []struct {
		name     string
		creds    []byte
		existing bool
		kept     bool
	}{
		{"credentials removed", nil, true, false},
		{"never had any", nil, false, false},
		{"credentials kept", []byte(`{"auths":{}}`), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := rendered(t, spec)
			r.images.PullCredentials = tc.creds
			kube := fake.NewClientset()
			if tc.existing {
				kube = fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: imagePullName, Namespace: r.ns()}})
			}
			if err := (&seedClient{kube: kube}).pruneImagePullSecret(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			_, err := kube.CoreV1().Secrets(r.ns()).Get(context.Background(), imagePullName, metav1.GetOptions{})
			if kept := err == nil; kept != (tc.kept && tc.existing) {
				t.Errorf("Secret kept: %v (%v)", kept, err)
			}
		})
	}
}

// readLeaf parses the first certificate of a PEM file.
func readLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: not PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Images from a registry: each container runs the reference the loader
// returned (by digest), and with pull credentials every pod pulls with
// the namespace's image pull Secret.
func TestRenderPulledImages(t *testing.T) {
	spec := controlplane.Spec{Key: "clusters/default/pulled", Name: "pulled", ServiceCIDR: "10.96.0.0/16", PodCIDR: "10.244.0.0/16",
		Binaries: releasestest.Binaries(t)}
	pulled := map[string]string{}
	for _, img := range Images(spec.Binaries) {
		pulled[img.Ref()] = "registry.example.net/lotse/" + img.Name + ":" + img.Tag + "@sha256:0123"
	}
	creds := []byte(`{"auths":{"registry.example.net":{"auth":"dTpw"}}}`)
	for _, tc := range []struct {
		name  string
		creds []byte
	}{{"anonymous", nil}, {"with pull credentials", creds}} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := rendered(t, spec)
			b := &Backend{ImagePullCredentials: tc.creds}
			r.images = b.imageRefs(spec.Binaries, pulled)
			objs := r.allObjects()
			templates := podTemplates(objs)
			for _, tpl := range templates {
				pod := tpl.Spec
				for _, c := range pod.Containers {
					if !strings.HasPrefix(c.Image, "registry.example.net/lotse/"+c.Name+":") || !strings.HasSuffix(c.Image, "@sha256:0123") {
						t.Errorf("container %s runs %s, not the pushed image", c.Name, c.Image)
					}
				}
				if got := len(pod.ImagePullSecrets); tc.creds == nil && got != 0 || tc.creds != nil && (got != 1 || pod.ImagePullSecrets[0].Name != imagePullName) {
					t.Errorf("pod pulls with %v", pod.ImagePullSecrets)
				}
			}
			if len(templates) < 4 {
				t.Fatalf("%d pod templates rendered", len(templates))
			}
			secret, ok := find[*corev1.Secret](objs, imagePullName)
			if tc.creds == nil && ok {
				t.Errorf("an image pull Secret without credentials")
			}
			if tc.creds != nil && (!ok || secret.Type != corev1.SecretTypeDockerConfigJson || string(secret.Data[corev1.DockerConfigJsonKey]) != string(tc.creds)) {
				t.Errorf("image pull Secret %+v", secret)
			}
		})
	}
}
