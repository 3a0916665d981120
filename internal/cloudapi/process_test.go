package cloudapi

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/lotse/lotse/internal/cloudapi/ccm/provider"
	lotsecloud "github.com/lotse/lotse/internal/cloudprovider"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controlplane/process/processtest"
	"github.com/lotse/lotse/internal/releases/releasestest"
)

// TestCloudControllerManagerProcess runs the default release's
// lotse-cloud-controller-manager (upstream's controllers, built against
// that release's k8s.io/cloud-provider) against a real API server, with
// the cloud API behind it: a new node gets its machine's metadata and
// loses the uninitialized taint, a node without a machine is removed, and
// a LoadBalancer Service gets its balancer's address.
func TestCloudControllerManagerProcess(t *testing.T) {
	binary := releasestest.CloudController(t)
	kubeconfig := processtest.ControlPlane(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cluster := clusterref.Ref{Namespace: "team", Name: "cp"}
	srv := &Server{
		Machines: fakeMachines{cluster: {
			"n1": {Name: "n1", ProviderID: "lotse://team/cp/n1", Address: "10.250.0.2", InstanceType: "small", Zone: "lab-1"},
		}},
		LoadBalancers: &fakeLoadBalancers{},
	}
	srv.Register(cluster, "uid-cp", "lab")
	creds, err := EnsureCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	url, err := srv.Serve(ctx, creds, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	config, _ := json.Marshal(cloudConfig(t, creds, creds, url, cluster, "uid-cp"))
	for name, data := range map[string][]byte{"cloud.json": config, "kubeconfig": kubeconfig} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The process writes into a file (read if the test fails).
	out, err := os.Create(filepath.Join(dir, "output"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, binary,
		"--kubeconfig", filepath.Join(dir, "kubeconfig"),
		"--cloud-provider", provider.Name, "--cloud-config", filepath.Join(dir, "cloud.json"),
		"--controllers", "cloud-node-controller,cloud-node-lifecycle-controller,service-lb-controller",
		"--cluster-name", cluster.Name, "--leader-elect=false", "--secure-port=0",
		"--use-service-account-credentials=false", "--configure-cloud-routes=false", "--node-monitor-period=1s")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the process ends, with its error in waitErr.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			data, _ := os.ReadFile(out.Name())
			t.Logf("cloud controller manager output:\n%s", data)
		}
	})

	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	until := func(what string, cond func() (bool, error)) {
		t.Helper()
		var last error
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			select {
			case <-exited:
				t.Fatalf("the cloud controller manager exited: %v", waitErr)
			default:
			}
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
}
