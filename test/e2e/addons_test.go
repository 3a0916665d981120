package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/netns"
	"github.com/lotse/lotse/internal/releases"
)

// TestAddons: one cluster with two nodes whose managed components are
// kept as declared: what a tenant deletes or edits comes back (with an
// event on the Cluster saying so), an object annotated lotse.dev/ignore is
// left alone and reported in status.addons; NetworkPolicies are enforced
// (see networkPolicies).
func TestAddons(t *testing.T) {
	const name = "addons"
	parallel(t)
	buildEchoImage(t) // before the machines load their images
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Region = "lab"
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "pool", Minimum: 2, Maximum: 3, MaxSurge: 1, Zones: []string{"zone-a", "zone-b"}}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, name)
	waitClusterReady(t, mc, name, 15*time.Minute)
	waitCondition(t, mc, name, lotsev1.ConditionSystemComponentsHealthy, time.Time{}, 5*time.Minute)
	cs := tenantClient(t, name)

	cl := getCluster(t, mc, name)
	var names []string
	for _, a := range cl.Status.Addons {
		names = append(names, a.Name)
		if !a.Healthy {
			t.Errorf("addon %s not healthy: %s", a.Name, a.Message)
		}
	}
	for _, want := range []string{"coredns", "konnectivity-agent", "kube-router", "default-network-policies", "local-path-provisioner", "metrics-server"} {
		if !slices.Contains(names, want) {
			t.Errorf("status.addons %v lacks %s", names, want)
		}
	}

	if !t.Run("a deleted Deployment comes back", func(t *testing.T) {
		before, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		if err := cs.AppsV1().Deployments("kube-system").Delete(ctx, "coredns", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, "a new CoreDNS Deployment", func() (bool, error) {
			d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			return err == nil && d.UID != before.UID, err
		})
		t.Logf("CoreDNS Deployment recreated %s after its deletion", time.Since(deleted).Round(time.Millisecond))
		waitClusterEvent(t, name, "AddonRepaired", "recreated Deployment kube-system/coredns")
		// Evidence newer than the deletion: the new Deployment (new UID)
		// available, and the condition True. The condition need not have
		// flipped: the new Deployment may adopt the old ReplicaSet before
		// the garbage collector removes it, and then it is never
		// unavailable.
		waitFor(t, 3*time.Minute, "the new CoreDNS Deployment available and SystemComponentsHealthy", func() (bool, error) {
			d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			if err != nil || d.UID == before.UID || d.Status.AvailableReplicas < 1 {
				return false, err
			}
			cl := getCluster(t, mc, name)
			return meta.IsStatusConditionTrue(cl.Status.Conditions, lotsev1.ConditionSystemComponentsHealthy), nil
		})
	}) {
		return
	}

	if !t.Run("an edited managed field is reverted", func(t *testing.T) {
		patch := []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"coredns","args":["-conf","/tmp/tenant"]}]}}}}`)
		if _, err := cs.AppsV1().Deployments("kube-system").Patch(ctx, "coredns", types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: "tenant-edit"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, "CoreDNS args reverted", func() (bool, error) {
			d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			return err == nil && slices.Equal(d.Spec.Template.Spec.Containers[0].Args, []string{"-conf", "/etc/coredns/Corefile"}), err
		})
		waitClusterEvent(t, name, "AddonRepaired", "changed by tenant-edit")
	}) {
		return
	}

	t.Run("an annotated object is left alone and reported", func(t *testing.T) {
		patch := []byte(`{"metadata":{"annotations":{"lotse.dev/ignore":"true"}},"data":{"Corefile":".:53 {\n    errors\n    kubernetes cluster.local\n}\n"}}`)
		if _, err := cs.CoreV1().ConfigMaps("kube-system").Patch(ctx, "coredns", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "tenant-edit"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, "status.addons to report the ignored ConfigMap", func() (bool, error) {
			for _, a := range getCluster(t, mc, name).Status.Addons {
				if a.Name == "coredns" && slices.Contains(a.Ignored, "ConfigMap kube-system/coredns") {
					return true, nil
				}
			}
			return false, nil
		})
		time.Sleep(2 * time.Second) // a keeper that did not honour the annotation would have acted by now
		cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil || strings.Contains(cm.Data["Corefile"], "prometheus") {
			t.Errorf("the ignored ConfigMap was reverted: %v", err)
		}
		patch = []byte(`{"metadata":{"annotations":{"lotse.dev/ignore":null}}}`)
		if _, err := cs.CoreV1().ConfigMaps("kube-system").Patch(ctx, "coredns", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "tenant-edit"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, "the Corefile restored once the annotation is gone", func() (bool, error) {
			cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			return err == nil && strings.Contains(cm.Data["Corefile"], "prometheus"), err
		})
	})

	if !t.Run("network policies", func(t *testing.T) { networkPolicies(t, mc, name, cs) }) {
		return
	}
	if !t.Run("node-local volumes", func(t *testing.T) { localVolumes(t, mc, name, cs) }) {
		return
	}
	if !t.Run("resource metrics and autoscaling", func(t *testing.T) { resourceMetrics(t, name, cs) }) {
		return
	}
	if !t.Run("cloud controller manager", func(t *testing.T) { cloudControllerManager(t, mc, name, cs) }) {
		return
	}
	// Last: it takes a node away.
	t.Run("a stopped machine's node is tainted, a deleted one's removed", func(t *testing.T) { stoppedMachine(t, mc, name, cs) })
}

// stoppedMachine: stopping a machine makes the cloud controller manager
// taint its node as shut down (once the node is NotReady); starting it
// again clears the taint; deleting the machine removes its Node.
func stoppedMachine(t *testing.T, mc client.Client, name string, cs kubernetes.Interface) {
	ctx := context.Background()
	const shutdownTaint = "node.cloudprovider.kubernetes.io/shutdown"
	machines := listMachines(t, mc, name)
	m := machines[len(machines)-1]
	setStopped := func(stopped bool) {
		t.Helper()
		patch := []byte(fmt.Sprintf(`{"spec":{"stopped":%t}}`, stopped))
		if err := mc.Patch(ctx, &m, client.RawPatch(types.MergePatchType, patch)); err != nil {
			t.Fatal(err)
		}
	}
	hasTaint := func() (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, m.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == shutdownTaint }), nil
	}
	if tainted, err := hasTaint(); err != nil || tainted {
		t.Fatalf("before the stop: tainted %v, %v", tainted, err)
	}

	setStopped(true)
	waitFor(t, 3*time.Minute, m.Name+" stopped", func() (bool, error) {
		got := &lotsev1.Machine{}
		err := mc.Get(ctx, client.ObjectKeyFromObject(&m), got)
		return err == nil && got.Status.Phase == lotsev1.MachineStopped && got.Status.ObservedGeneration == got.Generation, err
	})
	// The node goes NotReady after the controller-manager's grace period
	// (50 s), then the cloud controller manager adds the taint.
	waitFor(t, 5*time.Minute, m.Name+" tainted as shut down", hasTaint)

	setStopped(false)
	waitFor(t, 5*time.Minute, m.Name+" running again, taint gone", func() (bool, error) {
		got := &lotsev1.Machine{}
		if err := mc.Get(ctx, client.ObjectKeyFromObject(&m), got); err != nil {
			return false, err
		}
		tainted, err := hasTaint()
		return err == nil && got.Status.Phase == lotsev1.MachineRunning && !tainted, err
	})

	if err := mc.Delete(ctx, &m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Minute, m.Name+"'s Node removed", func() (bool, error) {
		_, err := cs.CoreV1().Nodes().Get(ctx, m.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// cloudControllerManager: nodes carry their machine's metadata, and
// Services of type LoadBalancer get an address and a balancer (public or
// internal, source ranges, PROXY protocol v2); bad annotations are
// reported on the Service; deleting the Service releases everything.
func cloudControllerManager(t *testing.T, mc client.Client, name string, cs kubernetes.Interface) {
	ctx := context.Background()
	// A process of the cluster's control plane, built with its release.
	ccms := 0
	for _, p := range clusterProcesses(name) {
		if componentOf(p.Name) != "cloud-controller-manager" {
			continue
		}
		ccms++
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID)); err == nil && !strings.Contains(exe, "/cloud-controller-manager/"+releases.Default().Version+"-") {
			t.Errorf("%s runs %s, want the cloud controller manager of %s", p.Name, exe, releases.Default().Version)
		}
	}
	if ccms != 1 {
		t.Errorf("%d cloud controller manager processes of %s, want 1", ccms, name)
	}
	machines := map[string]lotsev1.Machine{}
	for _, m := range listMachines(t, mc, name) {
		machines[m.Status.NodeName] = m
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		m, ok := machines[n.Name]
		if !ok {
			t.Fatalf("node %s has no machine", n.Name)
		}
		wantZone := []string{"zone-a", "zone-b"}[int(m.Spec.Index)%2]
		if n.Spec.ProviderID != "lotse://default/"+name+"/"+m.Name || n.Labels["topology.kubernetes.io/zone"] != wantZone ||
			n.Labels["topology.kubernetes.io/region"] != "lab" || n.Labels["node.kubernetes.io/instance-type"] != "local" {
			t.Errorf("node %s: providerID %q, labels %v", n.Name, n.Spec.ProviderID, n.Labels)
		}
		for _, taint := range n.Spec.Taints {
			if taint.Key == "node.cloudprovider.kubernetes.io/uninitialized" {
				t.Errorf("node %s is still uninitialized", n.Name)
			}
		}
		if len(n.Status.Addresses) == 0 || n.Status.Addresses[0].Address != m.Status.Addresses[0].Address {
			t.Errorf("node %s addresses %v, machine %v", n.Name, n.Status.Addresses, m.Status.Addresses)
		}
	}

	deployEchoAppWithArgs(t, cs, "default", "proxied", "serve", "-proxy-protocol")
	readyPodOf(t, cs, "default", "proxied")
	lbService := func(t *testing.T, svcName, app string, annotations map[string]string) *corev1.Service {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: svcName, Namespace: "default", Annotations: annotations},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": app},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}
		created := time.Now()
		if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var out *corev1.Service
		waitFor(t, time.Minute, svcName+" gets an address", func() (bool, error) {
			out, err = cs.CoreV1().Services("default").Get(ctx, svcName, metav1.GetOptions{})
			return err == nil && len(out.Status.LoadBalancer.Ingress) == 1, err
		})
		ip := out.Status.LoadBalancer.Ingress[0].IP
		waitFor(t, time.Minute, svcName+" answers on "+ip, func() (bool, error) {
			body, err := httpGet("http://" + ip + "/")
			return err == nil && strings.Contains(body, "hello from "+app+"-"), err
		})
		t.Logf("%s: created -> answering on %s in %s", svcName, ip, time.Since(created).Round(time.Millisecond))
		return out
	}

	var public *corev1.Service
	if !t.Run("public address from the host, source ranges", func(t *testing.T) {
		public = lbService(t, "web-public", "web", nil)
		ip := public.Status.LoadBalancer.Ingress[0].IP
		if !strings.HasPrefix(ip, "10.254.254.") {
			t.Errorf("public address %s is not from the pool", ip)
		}
		setRanges := func(ranges []string) {
			err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				svc, err := cs.CoreV1().Services("default").Get(ctx, "web-public", metav1.GetOptions{})
				if err != nil {
					return err
				}
				svc.Spec.LoadBalancerSourceRanges = ranges
				_, err = cs.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		setRanges([]string{"192.0.2.0/24"})
		waitFor(t, 2*time.Minute, "the host refused", func() (bool, error) {
			_, err := httpGet("http://" + ip + "/")
			return err != nil, nil
		})
		setRanges([]string{ip + "/32"}) // the host talks to a local address from that address
		waitFor(t, 2*time.Minute, "the host allowed again", func() (bool, error) {
			_, err := httpGet("http://" + ip + "/")
			return err == nil, err
		})
	}) {
		return
	}

	if !t.Run("PROXY protocol v2 tells the backend the real client", func(t *testing.T) {
		svc := lbService(t, "proxied-lb", "proxied", map[string]string{"lb.lotse.dev/loadbalancer-pool-protocol": "proxyv2"})
		ip := svc.Status.LoadBalancer.Ingress[0].IP
		if mode := svc.Status.LoadBalancer.Ingress[0].IPMode; mode == nil || *mode != corev1.LoadBalancerIPModeProxy {
			t.Errorf("ipMode %v, want Proxy", mode)
		}
		conn, err := net.DialTimeout("tcp", ip+":80", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: proxied\r\n\r\n")
		reply, _ := io.ReadAll(conn)
		if want := "(you are " + conn.LocalAddr().String() + ")"; !strings.Contains(string(reply), want) {
			t.Errorf("the backend did not see this client (%s):\n%s", want, reply)
		}
	}) {
		return
	}

	if !t.Run("internal address on the node network", func(t *testing.T) {
		svc := lbService(t, "web-internal", "web", map[string]string{"lb.lotse.dev/internal": "true"})
		ip := netip.MustParseAddr(svc.Status.LoadBalancer.Ingress[0].IP)
		nodesCIDR := netip.MustParsePrefix(getCluster(t, mc, name).Status.NodesCIDR)
		if !nodesCIDR.Contains(ip) {
			t.Errorf("internal address %s is not in the node network %s", ip, nodesCIDR)
		}
	}) {
		return
	}

	if !t.Run("a bad annotation is reported, nothing half-made", func(t *testing.T) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: "default", Annotations: map[string]string{"lb.lotse.dev/loadbalancer-flavor": "large"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}
		if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "an event naming the annotation", func() (bool, error) {
			events, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=bad"})
			if err != nil {
				return false, err
			}
			for _, e := range events.Items {
				if e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "unknown annotation lb.lotse.dev/loadbalancer-flavor") {
					return true, nil
				}
			}
			return false, fmt.Errorf("%d events", len(events.Items))
		})
		got, err := cs.CoreV1().Services("default").Get(ctx, "bad", metav1.GetOptions{})
		if err != nil || len(got.Status.LoadBalancer.Ingress) != 0 {
			t.Errorf("the bad Service got an address: %v %v", got.Status.LoadBalancer, err)
		}
	}) {
		return
	}

	if !t.Run("a killed balancer is restarted", func(t *testing.T) {
		ip := public.Status.LoadBalancer.Ingress[0].IP
		var pids []int
		for _, p := range clusterProcesses(name) {
			if strings.Contains(p.Name, "/lb-") {
				pids = append(pids, p.PID)
			}
		}
		if len(pids) == 0 {
			t.Fatal("no balancer process of the cluster")
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		waitFor(t, 2*time.Minute, "the public balancer answering again", func() (bool, error) {
			body, err := httpGet("http://" + ip + "/")
			return err == nil && strings.Contains(body, "hello from web-"), err
		})
		for _, p := range clusterProcesses(name) {
			if slices.Contains(pids, p.PID) {
				t.Errorf("balancer %s still has the killed PID %d", p.Name, p.PID)
			}
		}
	}) {
		return
	}

	t.Run("deleting the Service releases its balancer", func(t *testing.T) {
		ip := public.Status.LoadBalancer.Ingress[0].IP
		if err := cs.CoreV1().Services("default").Delete(ctx, "web-public", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "the address gone from the host", func() (bool, error) {
			out, err := exec.Command("ip", "-o", "addr", "show", "dev", "lo").CombinedOutput()
			return err == nil && !strings.Contains(string(out), " "+ip+"/32 "), fmt.Errorf("%v: %s", err, out)
		})
		if _, err := httpGet("http://" + ip + "/"); err == nil {
			t.Error("the released address still answers")
		}
	})
}

// httpGet GETs url on a new connection each time (a kept-alive one would
// outlive a change of the balancer's allowed ranges).
func httpGet(url string) (string, error) {
	resp, err := (&http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("status %s", resp.Status)
	}
	return string(body), err
}

// resourceMetrics: metrics-server answers through the aggregation layer
// (kubectl top), and a CPU-based HorizontalPodAutoscaler scales a
// Deployment up under load and back down without it.
func resourceMetrics(t *testing.T, name string, cs kubernetes.Interface) {
	ctx := context.Background()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	mustCLI(t, "cluster", "kubeconfig", name, "--output-file", kubeconfig)
	kubectl := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, kubectlPath(t), append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		return string(out), err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "kubectl top nodes", func() (bool, error) {
		out, err := kubectl(30*time.Second, "top", "nodes", "--no-headers")
		if err != nil {
			return false, fmt.Errorf("%v: %s", err, out)
		}
		for _, n := range nodes.Items {
			if !strings.Contains(out, n.Name) {
				return false, fmt.Errorf("no line for %s: %s", n.Name, out)
			}
		}
		return true, nil
	})

	dep := echoDeployment("default", "burn")
	dep.Spec.Template.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("20m")}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	zero := int32(0)
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "burn", Namespace: "default"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "burn"},
			MinReplicas:    ptr.To[int32](1),
			MaxReplicas:    3,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
				Name: corev1.ResourceCPU, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To[int32](50)}}}},
			// No stabilization: the test should not wait the default five
			// minutes for the way down.
			Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
				ScaleUp:   &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: &zero},
				ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: &zero},
			},
		},
	}
	if _, err := cs.AutoscalingV2().HorizontalPodAutoscalers("default").Create(ctx, hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	burner := readyPodOf(t, cs, "default", "burn")
	replicas := func() int32 {
		d, err := cs.AppsV1().Deployments("default").Get(ctx, "burn", metav1.GetOptions{})
		if err != nil || d.Spec.Replicas == nil {
			return -1
		}
		return *d.Spec.Replicas
	}
	// One busy core against a request of 20m.
	spin := make(chan error, 1)
	go func() {
		out, err := kubectl(3*time.Minute, "exec", burner, "--", "/echo", "spin", "75s")
		if err != nil {
			err = fmt.Errorf("%v: %s", err, out)
		}
		spin <- err
	}()
	waitFor(t, 3*time.Minute, "the HPA to scale burn up", func() (bool, error) {
		return replicas() > 1, nil
	})
	t.Logf("scaled up to %d replicas", replicas())
	if err := <-spin; err != nil {
		t.Fatalf("spin: %v", err)
	}
	waitFor(t, 4*time.Minute, "the HPA to scale burn back to 1", func() (bool, error) {
		return replicas() == 1, nil
	})
}

// localVolumes: a PVC of the default StorageClass binds once a pod uses
// it; what the pod writes survives the pod, on the machine's own disk; the
// volume goes away with the PVC.
func localVolumes(t *testing.T, mc client.Client, name string, cs kubernetes.Interface) {
	ctx := context.Background()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	mustCLI(t, "cluster", "kubeconfig", name, "--output-file", kubeconfig)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("16Mi")}},
		},
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := func(podName string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: "default"},
			Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "echo", Image: echoImage, ImagePullPolicy: corev1.PullNever,
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
				Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}},
			},
		}
	}
	waitRunning := func(podName string) *corev1.Pod {
		var p *corev1.Pod
		waitFor(t, 2*time.Minute, podName+" running", func() (bool, error) {
			var err error
			p, err = cs.CoreV1().Pods("default").Get(ctx, podName, metav1.GetOptions{})
			return err == nil && p.Status.Phase == corev1.PodRunning, err
		})
		return p
	}

	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod("writer"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	writer := waitRunning("writer")
	claim, err := cs.CoreV1().PersistentVolumeClaims("default").Get(ctx, "data", metav1.GetOptions{})
	if err != nil || claim.Status.Phase != corev1.ClaimBound || claim.Spec.StorageClassName == nil || *claim.Spec.StorageClassName != "local-path" {
		t.Fatalf("claim %+v: %v", claim.Status, err)
	}
	if out, err := kubectlExec(t, kubeconfig, "writer", "/echo", "write", "/data/greeting", "hello from the volume"); err != nil {
		t.Fatalf("write: %v\n%s", err, out)
	}
	// On the host, the data lies on the disk of the writer's machine.
	pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, claim.Spec.VolumeName, metav1.GetOptions{})
	if err != nil || pv.Spec.HostPath == nil {
		t.Fatalf("volume %s: %v", claim.Spec.VolumeName, err)
	}
	var machineDisk string
	for _, m := range listMachines(t, mc, name) {
		if m.Status.NodeName == writer.Spec.NodeName {
			machineDisk = m.Status.LocalVolumesPath
		}
	}
	if machineDisk == "" || !strings.HasPrefix(pv.Spec.HostPath.Path, machineDisk+"/") {
		t.Errorf("volume path %s is not below the machine's volumes path %q", pv.Spec.HostPath.Path, machineDisk)
	}
	if data, err := os.ReadFile(filepath.Join(pv.Spec.HostPath.Path, "greeting")); err != nil || string(data) != "hello from the volume" {
		t.Errorf("the data on the machine's disk: %q, %v", data, err)
	}

	if err := cs.CoreV1().Pods("default").Delete(ctx, "writer", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "writer gone", func() (bool, error) {
		_, err := cs.CoreV1().Pods("default").Get(ctx, "writer", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod("reader"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	reader := waitRunning("reader")
	if reader.Spec.NodeName != writer.Spec.NodeName {
		t.Errorf("the reader runs on %s, the volume lives on %s", reader.Spec.NodeName, writer.Spec.NodeName)
	}
	if out, err := kubectlExec(t, kubeconfig, "reader", "/echo", "read", "/data/greeting"); err != nil || out != "hello from the volume" {
		t.Errorf("read after the pod was replaced: %q, %v", out, err)
	}

	// Reclaim policy Delete: the PVC's end is the data's end.
	if err := cs.CoreV1().Pods("default").Delete(ctx, "reader", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().PersistentVolumeClaims("default").Delete(ctx, "data", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the volume's directory removed", func() (bool, error) {
		_, err := os.Stat(pv.Spec.HostPath.Path)
		return os.IsNotExist(err), err
	})
	waitFor(t, time.Minute, "the PV deleted", func() (bool, error) {
		_, err := cs.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
}

func listMachines(t testing.TB, mc client.Client, cluster string) []lotsev1.Machine {
	t.Helper()
	list := &lotsev1.MachineList{}
	if err := mc.List(context.Background(), list, client.InNamespace("default"), client.MatchingLabels{lotsev1.LabelCluster: cluster}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// networkPolicies: kube-system is protected while DNS answers everyone;
// tenant policies are enforced (ingress and egress); the tenant default
// deny comes and goes with the spec; a deleted default policy comes back.
func networkPolicies(t *testing.T, mc client.Client, name string, cs kubernetes.Interface) {
	ctx := context.Background()
	for _, app := range []string{"web", "client"} {
		deployEchoApp(t, cs, "default", app)
	}
	client := podProcess(t, cs, "default", readyPodOf(t, cs, "default", "client"), "/echo")
	// get asks from inside the client pod. A request that the pod made
	// and that failed is "denied"; anything else (the pod's process gone,
	// nsenter failing) fails the test rather than passing for a denial.
	get := func(url string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "nsenter", "--target", strconv.Itoa(client), "--net", "--mount", "--uts", "--root", "--wd", "--",
			"/echo", "get", "-timeout", "2s", url).CombinedOutput()
		return string(out), err
	}
	denied := func(url string) (bool, error) {
		out, err := get(url)
		if err == nil {
			return false, fmt.Errorf("%s answered: %.100s", url, out)
		}
		if !strings.HasPrefix(out, "echo get: ") {
			return false, fmt.Errorf("asking %s from the client pod: %v: %s", url, err, out)
		}
		return true, nil
	}
	const web = "http://web.default.svc.cluster.local/"
	waitFor(t, 2*time.Minute, "client -> web by DNS name", func() (bool, error) {
		out, err := get(web)
		return err == nil && strings.Contains(out, "hello from web-"), fmt.Errorf("%v: %s", err, out)
	})

	// A tenant policy that denies all ingress to web, and its removal.
	denyWeb := func(t *testing.T) {
		deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-web", Namespace: "default"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
		if _, err := cs.NetworkingV1().NetworkPolicies("default").Create(ctx, deny, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, "web denied", func() (bool, error) { return denied(web) })
	}
	allowWeb := func(t *testing.T) {
		if err := cs.NetworkingV1().NetworkPolicies("default").Delete(ctx, "deny-web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, "web reachable again", func() (bool, error) {
			out, err := get(web)
			return err == nil, fmt.Errorf("%v: %s", err, out)
		})
	}

	if !t.Run("kube-system is protected, DNS answers", func(t *testing.T) {
		dns := readyPodOf(t, cs, "kube-system", "")
		pod, err := cs.CoreV1().Pods("kube-system").Get(ctx, dns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// CoreDNS serves metrics on 9153, which no policy opens. It does
		// answer its own node (the firewall lets a node reach its pods, for
		// probes), so what stops the tenant pod is the policy.
		metrics := fmt.Sprintf("http://%s:9153/metrics", pod.Status.PodIP)
		ns := machineNSOf(t, getCluster(t, mc, name), pod.Status.HostIP)
		if out, err := exec.Command("nsenter", "--net="+netns.Path(ns), "--", "curl", "-sS", "-m", "5", metrics).CombinedOutput(); err != nil || !strings.Contains(string(out), "coredns_") {
			t.Fatalf("CoreDNS metrics from its node: %v\n%.300s", err, out)
		}
		rules, err := exec.Command("nsenter", "--net="+netns.Path(ns), "--", "iptables", "-w", "-S").CombinedOutput()
		if err != nil || !strings.Contains(string(rules), "KUBE-ROUTER-FORWARD") {
			t.Errorf("no kube-router chains on the node: %v", err)
		}
		if ok, err := denied(metrics); !ok {
			t.Errorf("a tenant pod reached CoreDNS's metrics port: %v", err)
		}
		waitFor(t, 2*time.Minute, "DNS and the web Service still working", func() (bool, error) {
			out, err := get(web)
			return err == nil, fmt.Errorf("%v: %s", err, out)
		})
	}) {
		return
	}

	if !t.Run("a tenant policy is enforced, and its removal restores traffic", func(t *testing.T) {
		denyWeb(t)
		allowWeb(t)
	}) {
		return
	}

	if !t.Run("a killed policy agent: rules keep working, the agent comes back", func(t *testing.T) {
		denyWeb(t)
		before := agentRestarts(t, cs)
		cl := getCluster(t, mc, name)
		killed := 0
		for _, m := range listMachines(t, mc, name) {
			for _, pid := range pidsInNetns(machineNSOf(t, cl, m.Status.Addresses[0].Address), "/kube-router") {
				if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
					killed++
				}
			}
		}
		if killed == 0 {
			t.Fatal("no kube-router process found on the cluster's machines")
		}
		// The rules are in the kernel: with the agents dead, still denied.
		if ok, err := denied(web); !ok {
			t.Errorf("web reachable while the agents were dead: %v", err)
		}
		waitFor(t, 2*time.Minute, "the agents restarted and ready", func() (bool, error) {
			return agentRestarts(t, cs) >= before+int32(killed), nil
		})
		allowWeb(t) // the restarted agents follow policy changes
	}) {
		return
	}

	if !t.Run("a deleted default policy comes back", func(t *testing.T) {
		before, err := cs.NetworkingV1().NetworkPolicies("kube-system").Get(ctx, "deny-all", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.NetworkingV1().NetworkPolicies("kube-system").Delete(ctx, "deny-all", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, "kube-system/deny-all back", func() (bool, error) {
			p, err := cs.NetworkingV1().NetworkPolicies("kube-system").Get(ctx, "deny-all", metav1.GetOptions{})
			return err == nil && p.UID != before.UID, err
		})
	}) {
		return
	}

	t.Run("tenant namespaces denied on request", func(t *testing.T) {
		updateCluster(t, mc, name, func(c *lotsev1.Cluster) { c.Spec.Networking.DefaultDenyTenantNamespaces = true })
		waitFor(t, 2*time.Minute, "default/deny-all", func() (bool, error) {
			_, err := cs.NetworkingV1().NetworkPolicies("default").Get(ctx, "deny-all", metav1.GetOptions{})
			return err == nil, err
		})
		waitFor(t, 2*time.Minute, "web denied by the default", func() (bool, error) {
			out, err := get(web)
			// Denied, not unresolvable: DNS stays allowed.
			return err != nil && strings.HasPrefix(out, "echo get: ") && !strings.Contains(out, "no such host"), fmt.Errorf("%v: %s", err, out)
		})
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "later"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, "later/deny-all for a new namespace", func() (bool, error) {
			_, err := cs.NetworkingV1().NetworkPolicies("later").Get(ctx, "deny-all", metav1.GetOptions{})
			return err == nil, err
		})
		updateCluster(t, mc, name, func(c *lotsev1.Cluster) { c.Spec.Networking.DefaultDenyTenantNamespaces = false })
		waitFor(t, 2*time.Minute, "the tenant defaults removed", func() (bool, error) {
			list, err := cs.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{LabelSelector: "addons.lotse.dev/addon"})
			if err != nil {
				return false, err
			}
			for _, p := range list.Items {
				if p.Namespace != "kube-system" {
					return false, fmt.Errorf("%s/%s still there", p.Namespace, p.Name)
				}
			}
			return true, nil
		})
		waitFor(t, 2*time.Minute, "web reachable again", func() (bool, error) {
			out, err := get(web)
			return err == nil, fmt.Errorf("%v: %s", err, out)
		})
	})
}

// agentRestarts sums the restart counts of the kube-router pods that are ready.
func agentRestarts(t testing.TB, cs kubernetes.Interface) int32 {
	t.Helper()
	list, err := cs.CoreV1().Pods("kube-system").List(context.Background(), metav1.ListOptions{LabelSelector: "k8s-app=kube-router"})
	if err != nil {
		return -1
	}
	var n int32
	for _, p := range list.Items {
		if !podReady(&p) {
			return -1
		}
		for _, c := range p.Status.ContainerStatuses {
			n += c.RestartCount
		}
	}
	return n
}

// podProcess is the PID of the process argv0 of a pod, found on this host
// by the pod's hostname and address. Entering its
// namespaces with nsenter is what kubectl exec does, without the API
// server, the tunnel and the kubelet in the path: tests of the pod network
// use it so that a control plane slowed by a busy host is not mistaken for
// a dropped packet.
func podProcess(t testing.TB, cs kubernetes.Interface, namespace, name, argv0 string) int {
	t.Helper()
	pod, err := cs.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Status.PodIP == "" {
		t.Fatalf("pod %s/%s has no address", namespace, name)
	}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		dir := filepath.Dir(f)
		if cmdline, err := os.ReadFile(f); err != nil || !strings.HasPrefix(string(cmdline), argv0+"\x00") {
			continue
		}
		environ, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil || !slices.Contains(strings.Split(string(environ), "\x00"), "HOSTNAME="+name) {
			continue
		}
		// Another cluster's pod could have the same name; not the address
		// as well.
		addrs, err := os.ReadFile(filepath.Join(dir, "net", "fib_trie"))
		if err != nil || !strings.Contains(string(addrs), " "+pod.Status.PodIP+"\n") {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err == nil {
			return pid
		}
	}
	t.Fatalf("no process of pod %s/%s (address %s) on this host", namespace, name, pod.Status.PodIP)
	return 0
}

// pidsInNetns lists the processes whose argv[0] is argv0 and that live in
// the named network namespace.
func pidsInNetns(ns, argv0 string) []int {
	var want syscall.Stat_t
	if err := syscall.Stat(netns.Path(ns), &want); err != nil {
		return nil
	}
	var out []int
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// argv0 as given, or the base name of a binary started by path.
		if first, _, _ := strings.Cut(string(data), "\x00"); first != argv0 && filepath.Base(first) != argv0 {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(f, "/proc/%d/cmdline", &pid); err != nil {
			continue
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err == nil && link == fmt.Sprintf("net:[%d]", want.Ino) {
			out = append(out, pid)
		}
	}
	return out
}

// machineNSOf is the network namespace of the machine with address ip.
func machineNSOf(t testing.TB, cl *lotsev1.Cluster, ip string) string {
	t.Helper()
	n := clusterNetwork(t, cl)
	for i := 0; i < 64; i++ {
		if a, err := n.MachineIP(i); err == nil && a.String() == ip {
			return n.MachineNS(i)
		}
	}
	t.Fatalf("no machine of %s has address %s", cl.Name, ip)
	return ""
}

// deployEchoApp runs one echo server labelled app=NAME behind a Service
// NAME (port 80).
func deployEchoApp(t testing.TB, cs kubernetes.Interface, namespace, name string) {
	t.Helper()
	deployEchoAppWithArgs(t, cs, namespace, name)
}

// deployEchoAppWithArgs is deployEchoApp with the server's arguments.
func deployEchoAppWithArgs(t testing.TB, cs kubernetes.Interface, namespace, name string, args ...string) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": name}
	dep := echoDeployment(namespace, name, args...)
	if _, err := cs.AppsV1().Deployments(namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// echoDeployment is one echo server labelled app=NAME, ready once it serves.
func echoDeployment(namespace, name string, args ...string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "echo", Image: echoImage, ImagePullPolicy: corev1.PullNever, Args: args,
					Ports:          []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
				}}},
			},
		},
	}
}

// readyPodOf waits for a ready pod labelled app=APP (k8s-app=kube-dns for
// an empty app) and returns its name.
func readyPodOf(t testing.TB, cs kubernetes.Interface, namespace, app string) string {
	t.Helper()
	selector := "app=" + app
	if app == "" {
		selector = "k8s-app=kube-dns"
	}
	var name string
	waitFor(t, 3*time.Minute, "a ready pod "+selector, func() (bool, error) {
		list, err := cs.CoreV1().Pods(namespace).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		for i := range list.Items {
			if p := &list.Items[i]; p.DeletionTimestamp == nil && podReady(p) {
				name = p.Name
				return true, nil
			}
		}
		return false, nil
	})
	return name
}

// waitClusterEvent waits for an event on a Cluster with the given reason
// whose note contains substr.
func waitClusterEvent(t testing.TB, cluster, reason, substr string) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", env.kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	waitFor(t, 2*time.Minute, "event "+reason+" on cluster "+cluster, func() (bool, error) {
		list, err := cs.EventsV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "regarding.name=" + cluster})
		if err != nil {
			return false, err
		}
		var seen []string
		for _, e := range list.Items {
			seen = append(seen, e.Reason+": "+e.Note)
			if e.Reason == reason && strings.Contains(e.Note, substr) {
				return true, nil
			}
		}
		return false, fmt.Errorf("events so far: %q", seen)
	})
}
