package cloudapi

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/lotse/lotse/internal/addons"
	lotsecloud "github.com/lotse/lotse/internal/cloudprovider"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/controlplane/process/processtest"
	"github.com/lotse/lotse/internal/releases/releasestest"
	"github.com/lotse/lotse/internal/supervisor"
)

// TestCloudControllerManagerProcess runs the default release's
// lotse-cloud-controller-manager (upstream's controllers, built against
// that release's k8s.io/cloud-provider) as a component of a real control
// plane (the process backend's), with the cloud API behind it and the
// rights Lotse's addon grants it and nothing more: a new node gets its
// machine's metadata and loses the uninitialized taint, a node without a
// machine is removed, and a LoadBalancer Service gets its balancer's
// address. A spec without it stops it.
func TestCloudControllerManagerProcess(t *testing.T) {
	binary := releasestest.CloudController(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cluster := clusterref.Ref{Namespace: "team", Name: "cp"}
	srv := &Server{
		Machines: fakeMachines{cluster: {
			"n1": {Name: "n1", ProviderID: "lotse://team/cp/n1", Address: "10.250.0.2", InstanceType: "small", Zone: "lab-1"},
		}},
		LoadBalancers: &fakeLoadBalancers{},
	}
	apiDir := t.TempDir()
	host, err := Start(ctx, srv, apiDir)
	if err != nil {
		t.Fatal(err)
	}
	access, err := host.Access(cluster, "uid-cp", "lab")
	if err != nil {
		t.Fatal(err)
	}
	cp := processtest.Start(t, func(s *controlplane.Spec) {
		s.CloudController = &controlplane.CloudController{Binary: binary, API: access}
	})
	kubeconfig := cp.Kubeconfig
	logFile := filepath.Join(cp.Backend.Dir(cp.Spec.Key), "logs", process.CompCloudController+"-0.log")
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(logFile)
			t.Logf("cloud controller manager output:\n%s", data)
		}
	})
	status := cp.Backend.Status(ctx, cp.Spec)
	healthy := false
	for _, c := range status.Components {
		healthy = healthy || c.Name == process.CompCloudController+"-0" && c.Healthy
	}
	if !healthy {
		t.Errorf("the control plane's status has no healthy %s-0: %+v", process.CompCloudController, status.Components)
	}

	// Its rights, as the cluster's addons grant them.
	rendered, err := addons.Render(addons.Config{CloudController: true})
	if err != nil {
		t.Fatal(err)
	}
	adminCfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(adminCfg)
	for _, a := range rendered {
		if a.Name != addons.CloudControllerName {
			continue
		}
		for _, o := range a.Objects {
			gvr := addons.Resources[o.GetKind()]
			if _, err := dyn.Resource(gvr).Namespace(o.GetNamespace()).Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: "test"}); err != nil {
				t.Fatal(err)
			}
		}
	}

	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	until := func(what string, cond func() (bool, error)) {
		t.Helper()
		var last error
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			ok, err := cond()
			last = err
			return ok, nil
		})
		if err != nil {
			t.Fatalf("%s: %v (last: %v)", what, err, last)
		}
	}
	uninitialized := corev1.Taint{Key: "node.cloudprovider.kubernetes.io/uninitialized", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	for _, name := range []string{"n1", "gone"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{uninitialized}}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	until("n1 initialized from its machine", func() (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, taint := range n.Spec.Taints {
			if taint.Key == uninitialized.Key {
				return false, nil
			}
		}
		return n.Spec.ProviderID == "lotse://team/cp/n1" && n.Labels[corev1.LabelTopologyZone] == "lab-1" &&
			n.Labels[corev1.LabelTopologyRegion] == "lab" && n.Labels[corev1.LabelInstanceTypeStable] == "small", nil
	})
	until("the node without a machine removed", func() (bool, error) {
		_, err := cs.CoreV1().Nodes().Get(ctx, "gone", metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	until("the Service's balancer address", func() (bool, error) {
		s, err := cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return len(s.Status.LoadBalancer.Ingress) == 1 && strings.HasPrefix(s.Status.LoadBalancer.Ingress[0].IP, "192.0.2."), nil
	})
	// A bad annotation: the manager's rule comes back as the Service's event.
	bad := svc.DeepCopy()
	bad.Name, bad.Annotations = "bad", map[string]string{lotsecloud.AnnotationPoolProtocol: "udp"}
	if _, err := cs.CoreV1().Services("default").Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	until("an event naming the bad annotation", func() (bool, error) {
		events, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=bad"})
		if err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if strings.Contains(e.Message, lotsecloud.AnnotationPoolProtocol) {
				return true, nil
			}
		}
		return false, nil
	})

	// Without one in the spec, the process stops (the manager's own
	// controllers take over).
	without := cp.Spec
	without.CloudController = nil
	cp.Converge(t, without)
	for _, p := range supervisor.FindProcesses(cp.Backend.Supervisor.Owner()) {
		if strings.Contains(p.Name, process.CompCloudController) {
			t.Errorf("%s still runs (pid %d) after a spec without it converged", p.Name, p.PID)
		}
	}
}
