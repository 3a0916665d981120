package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/machine/local"
	"github.com/lotse/lotse/internal/netns"
	"github.com/lotse/lotse/internal/pki"
)

// TestTunnel: the hosted API servers reach into their clusters only through
// the konnectivity tunnel. In two clusters with the same pod and Service
// ranges, side by side: validating and mutating admission webhooks, a CRD
// conversion webhook and an aggregated API served by a pod; the pod and
// Service proxies; kubectl logs, exec and port-forward; each cluster reaches
// only its own pods. Then faults: a webhook without endpoints fails within
// its timeout; a killed tunnel server or agent is replaced and webhooks work
// again. And a pod whose image is not in the offline bundle fails at once,
// with Lotse's event, without a packet leaving the host.
func TestTunnel(t *testing.T) {
	parallel(t)
	buildEchoImage(t)
	mc := mgmtClient(t)
	ctx := context.Background()
	names := []string{"tunnel-a", "tunnel-b"}
	const haName, openName = "tunnel-ha", "tunnel-open"
	all := append(names, haName, openName)
	for i, name := range all {
		c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
		// All clusters keep the default pod and Service ranges.
		c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: int32(max(2-i, 1)), Maximum: 3, MaxSurge: 1}}
		c.Spec.ControlPlane.HighAvailability = name == haName
		if name == openName {
			c.Spec.Networking.Egress = lotsev1.EgressAllow
		}
		if err := mc.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	}
	for _, name := range all {
		waitClusterReady(t, mc, name, 15*time.Minute)
		waitCondition(t, mc, name, lotsev1.ConditionSystemComponentsHealthy, time.Time{}, 5*time.Minute)
	}
	// The two clusters really have the same ranges.
	a, b := getCluster(t, mc, names[0]), getCluster(t, mc, names[1])
	if a.Spec.Networking.Pods != b.Spec.Networking.Pods || a.Spec.Networking.Services != b.Spec.Networking.Services {
		t.Fatalf("clusters differ in ranges: %+v vs %+v", a.Spec.Networking, b.Spec.Networking)
	}

	t.Run("both clusters", func(t *testing.T) {
		for _, name := range names {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				tc := newTunnelCluster(t, name)
				t.Run("kubernetes endpoints agree", tc.kubernetesEndpoints)
				t.Run("pod and service proxy", tc.proxies)
				t.Run("admission webhooks", tc.admissionWebhooks)
				t.Run("conversion webhook", tc.conversionWebhook)
				t.Run("aggregated API", tc.aggregatedAPI)
				t.Run("logs exec port-forward", tc.logsExecPortForward)
			})
		}
	})

	// HA: two API servers, each with its own tunnel server; the agents
	// hold a connection to both, so either API server reaches the pods.
	t.Run("HA: every API server reaches the pods", newTunnelCluster(t, haName).everyAPIServer)

	tc := newTunnelCluster(t, names[0])
	t.Run("webhook without endpoints fails within its timeout", tc.webhookWithoutEndpoints)
	t.Run("killed tunnel server is replaced", tc.killTunnelServer)
	t.Run("killed agents are replaced", tc.killAgents)
	t.Run("image outside the bundle fails locally", newTunnelCluster(t, names[1]).imageNotInBundle)
	t.Run("egress allowed: the machines' traffic is left alone", newTunnelCluster(t, openName).egressAllowed)
}

// tunnelCluster is one cluster of TestTunnel with the echo server deployed.
type tunnelCluster struct {
	name       string
	cs         kubernetes.Interface
	cfg        *rest.Config
	kubeconfig string
	caPEM      []byte
}

func newTunnelCluster(t testing.TB, name string) *tunnelCluster {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	mustCLI(t, "cluster", "kubeconfig", name, "--output-file", kubeconfig)
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	// No client-side rate limit (client-go's default of 5 requests a
	// second would be what the benchmark measures).
	cfg.QPS, cfg.Burst = 1000, 1000
	tc := &tunnelCluster{name: name, cs: kubernetes.NewForConfigOrDie(cfg), cfg: cfg, kubeconfig: kubeconfig}
	tc.deployEcho(t)
	return tc
}

// deploy is the echo Deployment's name: it differs between the clusters, so
// an answer tells which cluster's pod gave it.
func (tc *tunnelCluster) deploy() string { return "echo-" + tc.name }

// deployEcho runs the echo server with a serving certificate for the echo
// Service (HTTP on 80, the webhooks on 443), once per cluster.
func (tc *tunnelCluster) deployEcho(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	if secret, err := tc.cs.CoreV1().Secrets("default").Get(ctx, "echo-tls", metav1.GetOptions{}); err == nil {
		tc.caPEM = secret.Data["ca.crt"]
	} else {
		ca, err := pki.NewCA("echo-webhook-ca")
		if err != nil {
			t.Fatal(err)
		}
		kp, err := ca.Issue(pki.CertSpec{CommonName: "echo.default.svc", DNSNames: []string{"echo.default.svc", "echo.default.svc.cluster.local"}, Server: true})
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, err := pki.KeyPEM(kp.Key)
		if err != nil {
			t.Fatal(err)
		}
		tc.caPEM = pki.CertPEM(ca.Cert)
		if _, err := tc.cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "echo-tls"},
			Data:       map[string][]byte{"ca.crt": tc.caPEM, "tls.crt": pki.CertPEM(kp.Cert), "tls.key": keyPEM},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	labels := map[string]string{"app": "echo"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: tc.deploy()},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name: "echo", Image: echoImage, ImagePullPolicy: corev1.PullNever,
						Args:           []string{"serve", "-tls-cert", "/tls/tls.crt", "-tls-key", "/tls/tls.key"},
						Ports:          []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 8443}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
						VolumeMounts:   []corev1.VolumeMount{{Name: "tls", MountPath: "/tls", ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "echo-tls"}}}},
				},
			},
		},
	}
	if _, err := tc.cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
			{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443)},
		}},
	}
	if _, err := tc.cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, tc.name+": echo pod ready", func() (bool, error) {
		p, err := tc.echoPod()
		return err == nil && podReady(p), err
	})
}

func (tc *tunnelCluster) echoPod() (*corev1.Pod, error) {
	list, err := tc.cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=echo"})
	if err != nil {
		return nil, err
	}
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp == nil && list.Items[i].Status.Phase == corev1.PodRunning {
			return &list.Items[i], nil
		}
	}
	return nil, fmt.Errorf("no running echo pod")
}

func (tc *tunnelCluster) kubectl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, kubectlPath(t), append([]string{"--kubeconfig", tc.kubeconfig}, args...)...).CombinedOutput()
	return string(out), err
}

func (tc *tunnelCluster) kubernetesEndpoints(t *testing.T) {
	ctx := context.Background()
	eps, err := tc.cs.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Endpoints default/kubernetes: %v", err)
	}
	slice, err := tc.cs.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("EndpointSlice default/kubernetes: %v", err)
	}
	if err := endpointsAgree(eps, slice); err != nil {
		t.Error(err)
	}
	// Nothing else may claim the Service (a mirrored second slice).
	slices, err := tc.cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kubernetes"})
	if err != nil {
		t.Fatal(err)
	}
	if len(slices.Items) != 1 {
		t.Errorf("%d EndpointSlices for the kubernetes Service, want 1", len(slices.Items))
	}
}

// endpointsAgree reports how the Endpoints and the EndpointSlice of a
// Service differ (addresses and ports), if they do.
//
//lint:ignore SA1019 the test checks that the deprecated Endpoints exist too
func endpointsAgree(eps *corev1.Endpoints, slice *discoveryv1.EndpointSlice) error {
	var epAddrs, sliceAddrs []string
	epPorts, slicePorts := map[string]int32{}, map[string]int32{}
	for _, s := range eps.Subsets {
		for _, a := range s.Addresses {
			epAddrs = append(epAddrs, a.IP)
		}
		for _, p := range s.Ports {
			epPorts[p.Name] = p.Port
		}
	}
	for _, e := range slice.Endpoints {
		sliceAddrs = append(sliceAddrs, e.Addresses...)
	}
	for _, p := range slice.Ports {
		slicePorts[ptr.Deref(p.Name, "")] = ptr.Deref(p.Port, 0)
	}
	if len(epAddrs) == 0 || fmt.Sprint(epAddrs) != fmt.Sprint(sliceAddrs) || fmt.Sprint(epPorts) != fmt.Sprint(slicePorts) {
		return fmt.Errorf("Endpoints %v %v and EndpointSlice %v %v disagree", epAddrs, epPorts, sliceAddrs, slicePorts)
	}
	return nil
}

func (tc *tunnelCluster) proxies(t *testing.T) {
	pod, err := tc.echoPod()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rc := tc.cs.CoreV1().RESTClient()
	out, err := rc.Get().AbsPath("/api/v1/namespaces/default/pods/" + pod.Name + ":8080/proxy/").DoRaw(ctx)
	if err != nil || !strings.Contains(string(out), "hello from "+pod.Name) {
		t.Errorf("pod proxy: %v: %s", err, out)
	}
	out, err = rc.Get().AbsPath("/api/v1/namespaces/default/services/http:echo:80/proxy/").DoRaw(ctx)
	if err != nil || !strings.Contains(string(out), "hello from "+tc.deploy()+"-") {
		t.Errorf("service proxy: %v: %s (want an answer of this cluster's %s)", err, out, tc.deploy())
	}
}

// registerEchoWebhooks makes the echo pod the validating and mutating
// webhook of ConfigMaps labelled echo-webhook=<cluster>.
func (tc *tunnelCluster) registerEchoWebhooks(t testing.TB) {
	ctx := context.Background()
	selector := &metav1.LabelSelector{MatchLabels: map[string]string{"echo-webhook": tc.name}}
	rules := []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}}}}
	ref := func(path string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{CABundle: tc.caPEM,
			Service: &admissionregistrationv1.ServiceReference{Namespace: "default", Name: "echo", Path: ptr.To(path), Port: ptr.To[int32](443)}}
	}
	fail, none := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone
	if _, err := tc.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "echo-validate"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{Name: "validate.echo.lotse.dev", ClientConfig: ref("/validate"), Rules: rules,
			ObjectSelector: selector, FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](10)}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "echo-mutate"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "mutate.echo.lotse.dev", ClientConfig: ref("/mutate"), Rules: rules,
			ObjectSelector: selector, FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](10)}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (tc *tunnelCluster) admissionWebhooks(t *testing.T) {
	tc.registerEchoWebhooks(t)
	pod, err := tc.echoPod()
	if err != nil {
		t.Fatal(err)
	}
	// Webhook configurations take effect within a second or so.
	var cm *corev1.ConfigMap
	waitFor(t, 2*time.Minute, "the mutating webhook to label a ConfigMap", func() (bool, error) {
		cm, err = tc.createWebhookConfigMap("mutated-", false)
		return err == nil && cm.Labels["echo-mutated"] != "", err
	})
	if cm.Labels["echo-mutated"] != pod.Name {
		t.Errorf("ConfigMap mutated by %q, want the echo pod %s of this cluster", cm.Labels["echo-mutated"], pod.Name)
	}
	_, err = tc.createWebhookConfigMap("denied-", true)
	if err == nil || !strings.Contains(err.Error(), "denied by the echo webhook on "+pod.Name) {
		t.Errorf("ConfigMap labelled echo-deny=true: got %v, want a denial by %s", err, pod.Name)
	}
}

// createWebhookConfigMap creates a ConfigMap the echo webhooks look at.
func (tc *tunnelCluster) createWebhookConfigMap(prefix string, deny bool) (*corev1.ConfigMap, error) {
	labels := map[string]string{"echo-webhook": tc.name}
	if deny {
		labels["echo-deny"] = "true"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return tc.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix, Labels: labels}}, metav1.CreateOptions{})
}

func (tc *tunnelCluster) conversionWebhook(t *testing.T) {
	ctx := context.Background()
	ext := apiextensionsclient.NewForConfigOrDie(tc.cfg)
	schemaOf := func(field string) *apiextensionsv1.CustomResourceValidation {
		return &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"spec": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{field: {Type: "integer"}}}}}}
	}
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "widgets.echo.lotse.dev"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "echo.lotse.dev", Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "widgets", Singular: "widget", Kind: "Widget", ListKind: "WidgetList"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{
				{Name: "v1", Served: true, Storage: true, Schema: schemaOf("size")},
				{Name: "v2", Served: true, Storage: false, Schema: schemaOf("replicas")},
			},
			Conversion: &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.WebhookConverter, Webhook: &apiextensionsv1.WebhookConversion{
				ConversionReviewVersions: []string{"v1"},
				ClientConfig: &apiextensionsv1.WebhookClientConfig{CABundle: tc.caPEM,
					Service: &apiextensionsv1.ServiceReference{Namespace: "default", Name: "echo", Path: ptr.To("/convert"), Port: ptr.To[int32](443)}},
			}},
		},
	}
	if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(tc.cfg)
	v1 := schema.GroupVersionResource{Group: "echo.lotse.dev", Version: "v1", Resource: "widgets"}
	v2 := v1
	v2.Version = "v2"
	obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "echo.lotse.dev/v1", "kind": "Widget",
		"metadata": map[string]any{"name": "w1"}, "spec": map[string]any{"size": int64(3)}}}
	waitFor(t, time.Minute, "the Widget CRD to serve v1", func() (bool, error) {
		_, err := dyn.Resource(v1).Namespace("default").Create(ctx, obj, metav1.CreateOptions{})
		return err == nil, err
	})
	var got *unstructured.Unstructured
	waitFor(t, 2*time.Minute, "the Widget read as v2", func() (bool, error) {
		var err error
		got, err = dyn.Resource(v2).Namespace("default").Get(ctx, "w1", metav1.GetOptions{})
		return err == nil, err
	})
	if r, _, _ := unstructured.NestedInt64(got.Object, "spec", "replicas"); r != 3 || got.GetAPIVersion() != "echo.lotse.dev/v2" {
		t.Errorf("Widget as v2: %v, want apiVersion echo.lotse.dev/v2 and spec.replicas 3", got.Object)
	}
}

func (tc *tunnelCluster) aggregatedAPI(t *testing.T) {
	ctx := context.Background()
	apiServices := dynamic.NewForConfigOrDie(tc.cfg).Resource(schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"})
	svc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1.aggregated.lotse.dev"},
		"spec": map[string]any{"group": "aggregated.lotse.dev", "version": "v1", "caBundle": base64.StdEncoding.EncodeToString(tc.caPEM),
			"service":              map[string]any{"namespace": "default", "name": "echo", "port": int64(443)},
			"groupPriorityMinimum": int64(1000), "versionPriority": int64(15)},
	}}
	if _, err := apiServices.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "APIService v1.aggregated.lotse.dev Available", func() (bool, error) {
		s, err := apiServices.Get(ctx, svc.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(s.Object, "status", "conditions")
		for _, c := range conds {
			cm, _ := c.(map[string]any)
			if cm["type"] == "Available" {
				return cm["status"] == "True", fmt.Errorf("%v: %v", cm["reason"], cm["message"])
			}
		}
		return false, nil
	})
	out, err := tc.cs.CoreV1().RESTClient().Get().AbsPath("/apis/aggregated.lotse.dev/v1").DoRaw(ctx)
	if err != nil || !strings.Contains(string(out), `"groupVersion":"aggregated.lotse.dev/v1"`) {
		t.Errorf("GET /apis/aggregated.lotse.dev/v1: %v: %s", err, out)
	}
}

func (tc *tunnelCluster) logsExecPortForward(t *testing.T) {
	pod, err := tc.echoPod()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := tc.kubectl(t, "logs", pod.Name); err != nil || !strings.Contains(out, "serving webhooks") {
		t.Errorf("kubectl logs: %v: %s", err, out)
	}
	if out, err := tc.kubectl(t, "exec", pod.Name, "--", "/echo", "get", "http://127.0.0.1:8080/"); err != nil || !strings.Contains(out, "hello from "+pod.Name) {
		t.Errorf("kubectl exec: %v: %s", err, out)
	}
	// port-forward to a free local port, then GET through it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pf := exec.CommandContext(ctx, kubectlPath(t), "--kubeconfig", tc.kubeconfig, "port-forward", "pod/"+pod.Name, fmt.Sprintf("%d:8080", port))
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = pf.Wait() }()
	waitFor(t, 2*time.Minute, "a GET through kubectl port-forward", func() (bool, error) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), "hello from "+pod.Name), fmt.Errorf("answer %q", body)
	})
}

// everyAPIServer sends the pod proxy request to each API server directly
// (not through the load balancer).
func (tc *tunnelCluster) everyAPIServer(t *testing.T) {
	var layout struct {
		APIServer []int `json:"apiServer"`
	}
	data, err := os.ReadFile(filepath.Join(clusterDir(tc.name), "ports.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &layout); err != nil || len(layout.APIServer) != 2 {
		t.Fatalf("API server ports %v (%v), want 2", layout.APIServer, err)
	}
	pod, err := tc.echoPod()
	if err != nil {
		t.Fatal(err)
	}
	for i, port := range layout.APIServer {
		cfg := rest.CopyConfig(tc.cfg)
		cfg.Host = fmt.Sprintf("https://127.0.0.1:%d", port)
		cs := kubernetes.NewForConfigOrDie(cfg)
		waitFor(t, 2*time.Minute, fmt.Sprintf("API server %d reaching the echo pod", i), func() (bool, error) {
			out, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/default/pods/" + pod.Name + ":8080/proxy/").DoRaw(context.Background())
			return err == nil && strings.Contains(string(out), "hello from "+pod.Name), fmt.Errorf("%v: %s", err, out)
		})
	}
}

// webhookWithoutEndpoints: a webhook whose Service selects no pod fails
// with the API server's error within its timeout, not a hang.
func (tc *tunnelCluster) webhookWithoutEndpoints(t *testing.T) {
	ctx := context.Background()
	if _, err := tc.cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "nobody"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "nobody"}, Ports: []corev1.ServicePort{{Port: 443}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	fail, none := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone
	if _, err := tc.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "nobody"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{Name: "nobody.echo.lotse.dev",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: tc.caPEM, Service: &admissionregistrationv1.ServiceReference{Namespace: "default", Name: "nobody"}},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}}}},
			ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"echo-webhook": "nobody"}},
			FailurePolicy:  &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](5)}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = tc.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, "nobody", metav1.DeleteOptions{})
	}()
	var err error
	waitFor(t, 2*time.Minute, "the webhook without endpoints to be called", func() (bool, error) {
		_, err = tc.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			GenerateName: "nobody-", Labels: map[string]string{"echo-webhook": "nobody"}}}, metav1.CreateOptions{})
		return err != nil, nil
	})
	// The error names the webhook; with a 5 s webhook timeout the client's
	// own 30 s context never ran out (that would be a hang).
	if !strings.Contains(err.Error(), "nobody.echo.lotse.dev") {
		t.Errorf("create with a webhook without endpoints: %v, want the API server's webhook error", err)
	}
}

// killTunnelServer kills the konnectivity server with SIGKILL: the
// supervisor starts a new one, the agents reconnect, webhooks work again.
func (tc *tunnelCluster) killTunnelServer(t *testing.T) {
	var victim int
	for _, p := range clusterProcesses(tc.name) {
		if strings.HasSuffix(p.Name, "/konnectivity-server-0") {
			victim = p.PID
		}
	}
	if victim == 0 {
		t.Fatalf("no konnectivity-server process for %s", tc.name)
	}
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Evidence newer than the fault: a server with another PID.
	waitFor(t, 2*time.Minute, "a new konnectivity server", func() (bool, error) {
		for _, p := range clusterProcesses(tc.name) {
			if strings.HasSuffix(p.Name, "/konnectivity-server-0") && p.PID != victim {
				return true, nil
			}
		}
		return false, nil
	})
	tc.waitWebhookWorks(t)
}

// killAgents kills every agent process of the cluster with SIGKILL: the
// kubelets restart them (the pods' restart counts go up), they reconnect,
// and webhooks work again.
func (tc *tunnelCluster) killAgents(t *testing.T) {
	ctx := context.Background()
	restarts := func() (map[string]int32, int) {
		list, err := tc.cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=konnectivity-agent"})
		if err != nil {
			t.Fatal(err)
		}
		out, ready := map[string]int32{}, 0
		for _, p := range list.Items {
			for _, c := range p.Status.ContainerStatuses {
				out[p.Name] = c.RestartCount
			}
			if podReady(&p) {
				ready++
			}
		}
		return out, ready
	}
	before, _ := restarts()
	if len(before) == 0 {
		t.Fatal("no agent pods")
	}
	var layout struct {
		Tunnel struct {
			Node int `json:"node"`
		} `json:"tunnel"`
	}
	data, err := os.ReadFile(filepath.Join(clusterDir(tc.name), "ports.json"))
	if err != nil || json.Unmarshal(data, &layout) != nil || layout.Tunnel.Node == 0 {
		t.Fatalf("tunnel port of %s: %v", tc.name, err)
	}
	pids := agentPIDs(layout.Tunnel.Node)
	if len(pids) != len(before) {
		t.Fatalf("%d agent processes for %d agent pods", len(pids), len(before))
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Minute, "every agent restarted and ready", func() (bool, error) {
		now, ready := restarts()
		for name, n := range before {
			if now[name] <= n {
				return false, fmt.Errorf("agent %s not restarted yet", name)
			}
		}
		return ready == len(before), fmt.Errorf("%d/%d agents ready", ready, len(before))
	})
	tc.waitWebhookWorks(t)
}

// agentPIDs finds the agent processes that dial the tunnel endpoint port.
func agentPIDs(port int) []int {
	var out []int
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		data, err := os.ReadFile(f)
		if err != nil || !strings.HasPrefix(string(data), "/proxy-agent\x00") ||
			!strings.Contains(string(data), fmt.Sprintf("--proxy-server-port=%d\x00", port)) {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(f, "/proc/%d/cmdline", &pid); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

func (tc *tunnelCluster) waitWebhookWorks(t *testing.T) {
	t.Helper()
	waitFor(t, 2*time.Minute, tc.name+": the mutating webhook answering again", func() (bool, error) {
		cm, err := tc.createWebhookConfigMap("again-", false)
		return err == nil && cm.Labels["echo-mutated"] != "", err
	})
}

// imageNotInBundle: a pod whose image is not in the bundle fails to pull at
// once, Lotse says why in an event, and nothing went out: the machine's
// egress rule rejected the attempts, the host forwarded nothing.
func (tc *tunnelCluster) imageNotInBundle(t *testing.T) {
	ctx := context.Background()
	mc := mgmtClient(t)
	cl := getCluster(t, mc, tc.name)
	if cl.Spec.Networking.Egress != lotsev1.EgressDeny {
		t.Fatalf("spec.networking.egress defaults to %q, want Deny", cl.Spec.Networking.Egress)
	}
	const image = "registry.k8s.io/e2e-not-in-bundle:1.0"
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "not-in-bundle"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "c", Image: image, ImagePullPolicy: corev1.PullIfNotPresent}}}}
	if _, err := tc.cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tc.waitPullFailed(t, pod.Name, time.Minute)
	waitFor(t, 2*time.Minute, "Lotse's ImageNotInBundle event", func() (bool, error) {
		evs, err := tc.cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod.Name + ",reason=ImageNotInBundle"})
		if err != nil || len(evs.Items) == 0 {
			return false, err
		}
		msg := evs.Items[0].Message
		return strings.Contains(msg, image) && strings.Contains(msg, "lotse image add"), fmt.Errorf("event says %q", msg)
	})
	// The attempts died inside the machine...
	node := ""
	if p, err := tc.cs.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{}); err == nil {
		node = p.Spec.NodeName
	}
	m := &lotsev1.Machine{}
	if err := mc.Get(ctx, clientKey(node), m); err != nil {
		t.Fatalf("machine %s: %v", node, err)
	}
	network := clusterNetwork(t, cl)
	// (Counted in the raw table: the policy agent rewrites the filter
	// table now and then, and with it the REJECT rule's counter.)
	if n := iptablesCounter(t, network.MachineNS(int(m.Spec.Index)), "raw", "LOTSE-EGRESS-SEEN", "ACCEPT"); n == 0 {
		t.Errorf("the egress policy of machine %s saw no packet to the outside", node)
	}
	// ...and the host forwarded nothing from the cluster's uplink.
	if n := iptablesCounter(t, "", "filter", "FORWARD", "DROP", "-i", network.HostLink()); n != 0 {
		t.Errorf("the host saw %d packets from %s to forward", n, network.HostLink())
	}
	_ = tc.cs.CoreV1().Pods("default").Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})

	// The host itself never sends a packet into the cluster's pod or
	// Service range (the API servers use the tunnel): a connection from the
	// host to the echo pod's address fails at once, inside the host.
	echo, err := tc.echoPod()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(echo.Status.PodIP, "8080"), 5*time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("the host reached pod %s at %s directly", echo.Name, echo.Status.PodIP)
	}
	if !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("host -> pod %s: %v (after %s), want an immediate 'network is unreachable'", echo.Status.PodIP, err, time.Since(start).Round(time.Millisecond))
	}
}

// egressAllowed: with spec.networking.egress Allow the machines have no
// egress rule, and a failed pull is the kubelet's business (no Lotse event).
func (tc *tunnelCluster) egressAllowed(t *testing.T) {
	ctx := context.Background()
	mc := mgmtClient(t)
	cl := getCluster(t, mc, tc.name)
	network := clusterNetwork(t, cl)
	machines := &lotsev1.MachineList{}
	if err := mc.List(ctx, machines, client.InNamespace("default"), client.MatchingLabels{lotsev1.LabelCluster: tc.name}); err != nil || len(machines.Items) == 0 {
		t.Fatalf("machines of %s: %v", tc.name, err)
	}
	for _, m := range machines.Items {
		out, err := exec.Command("nsenter", "--net="+netns.Path(network.MachineNS(int(m.Spec.Index))), "--", "iptables", "-w", "-S", "OUTPUT").CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if strings.Contains(string(out), "LOTSE-EGRESS") {
			t.Errorf("machine %s of a cluster with egress allowed has the egress rule:\n%s", m.Name, out)
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pull-allowed"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/e2e-not-in-bundle:1.0"}}}}
	if _, err := tc.cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Nothing answers the resolver here: the pull fails after its time-outs.
	kubeletMsg := tc.waitPullFailed(t, pod.Name, 3*time.Minute)
	if strings.Contains(kubeletMsg, "operation not permitted") || strings.Contains(kubeletMsg, "network is unreachable") {
		t.Errorf("the pull was rejected inside the machine although egress is allowed: %s", kubeletMsg)
	}
	time.Sleep(2 * time.Second) // Lotse's watch would have reported by now
	evs, err := tc.cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod.Name + ",reason=" + "ImageNotInBundle"})
	if err != nil || len(evs.Items) != 0 {
		t.Errorf("ImageNotInBundle events in a cluster with egress allowed: %v %v", err, evs.Items)
	}
	_ = tc.cs.CoreV1().Pods("default").Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
}

// waitPullFailed waits until a pod's container waits on a failed pull and
// returns the kubelet's message.
func (tc *tunnelCluster) waitPullFailed(t *testing.T, pod string, timeout time.Duration) string {
	t.Helper()
	var msg string
	waitFor(t, timeout, "the pull of "+pod+"'s image to fail", func() (bool, error) {
		p, err := tc.cs.CoreV1().Pods("default").Get(context.Background(), pod, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, s := range p.Status.ContainerStatuses {
			if w := s.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
				msg = w.Message
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("kubelet: %s", msg)
	return msg
}

// waitCondition waits until a condition of a cluster is True with a
// lastTransitionTime after since (zero: any time).
func waitCondition(t testing.TB, mc client.Client, name, typ string, since time.Time, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, name+" "+typ, func() (bool, error) {
		cl := &lotsev1.Cluster{}
		if err := mc.Get(context.Background(), clientKey(name), cl); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(cl.Status.Conditions, typ)
		if c == nil {
			return false, nil
		}
		return c.Status == metav1.ConditionTrue && c.LastTransitionTime.Time.After(since), fmt.Errorf("%s: %s", c.Reason, c.Message)
	})
}

func clientKey(name string) client.ObjectKey {
	return client.ObjectKey{Namespace: "default", Name: name}
}

// clusterNetwork is the local network of a cluster's machines.
func clusterNetwork(t testing.TB, cl *lotsev1.Cluster) local.Network {
	t.Helper()
	n, err := local.ParseNetwork(local.NetworkID(env.owner, "clusters/default/"+cl.Name), cl.Status.NodesCIDR)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// iptablesCounter sums the packet counters of the rules of chain in table
// (in namespace ns; the host's when empty) that jump to target and, if
// inIface is given, match that input interface.
func iptablesCounter(t testing.TB, ns, table, chain, target string, inIface ...string) uint64 {
	t.Helper()
	argv := []string{"iptables", "-w", "-t", table, "-L", chain, "-v", "-n", "-x"}
	if ns != "" {
		argv = append([]string{"nsenter", "--net=" + netns.Path(ns), "--"}, argv...)
	}
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v: %s", argv, err, out)
	}
	var sum uint64
	for _, line := range strings.Split(string(out), "\n") {
		// pkts bytes target prot opt in out source destination
		f := strings.Fields(line)
		if len(f) < 9 || f[2] != target || (len(inIface) > 0 && f[5] != inIface[0]) {
			continue
		}
		var n uint64
		if _, err := fmt.Sscan(f[0], &n); err == nil {
			sum += n
		}
	}
	return sum
}
