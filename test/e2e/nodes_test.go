package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/machine/local"
	"github.com/lotse/lotse/internal/manager"
	"github.com/lotse/lotse/internal/netns"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/supervisor"
)

const echoImage = "registry.lotse.local/echo:e2e"

// buildEchoImage builds the project's echo server into an image that every
// node loads (the extra images directory of the cache).
func buildEchoImage(t testing.TB) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "echo")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "../images/echo")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build echo: %v\n%s", err, out)
	}
	b := &images.Builder{CacheDir: releases.DefaultCacheDir()}
	extra := manager.ExtraImagesDir(releases.DefaultCacheDir())
	if err := os.MkdirAll(extra, 0o755); err != nil {
		t.Fatal(err)
	}
	// The same server under a second tag, which overrides can point at.
	for _, tag := range []string{"e2e", echoMirrorTag} {
		tar, err := b.Ensure(context.Background(), images.FromBinary("echo", tag, bin, []string{"/echo"}))
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(tar)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(extra, "echo-"+tag+".tar"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// echoMirrorTag is the echo server's second tag.
const echoMirrorTag = "mirror"

// echoImageAt is the echo server's image at a tag.
func echoImageAt(tag string) string { return images.Ref("echo", tag) }

// TestWorkerPools: a cluster with two pools (2 + 1 machines) becomes Ready
// with three Ready nodes carrying their pools' labels and taints; pods run
// across the nodes and reach each other, Services by DNS name and the API
// server; logs, exec and NodePorts work; scaling down drains; killed node
// processes come back; deleting the cluster leaves nothing on the host.
func TestWorkerPools(t *testing.T) {
	parallel(t)
	const name = "pools"
	buildEchoImage(t)
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Workers = []lotsev1.WorkerPool{
		{Name: "web", Minimum: 2, Maximum: 3, MaxSurge: 1, Labels: map[string]lotsev1.LabelValue{"tier": "web"}},
		{Name: "batch", Minimum: 1, Maximum: 2, MaxSurge: 1, Labels: map[string]lotsev1.LabelValue{"tier": "batch"},
			Taints: []lotsev1.Taint{{Key: "dedicated", Value: "batch", Effect: "NoSchedule"}}},
	}
	start := time.Now()
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m")
		}
	})
	diagnoseOnFailure(t, name)
	cl := waitClusterReady(t, mc, name, 15*time.Minute)
	t.Logf("cluster with 3 nodes Ready after %s", time.Since(start).Round(time.Second))

	cs := tenantClient(t, name)
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 3 {
		t.Fatalf("%d nodes, want 3", len(nodes.Items))
	}
	pools := map[string]int{}
	for _, n := range nodes.Items {
		pool := n.Labels[lotsev1.LabelPool]
		pools[pool]++
		if n.Labels["tier"] != pool {
			t.Errorf("node %s of pool %s has tier=%q", n.Name, pool, n.Labels["tier"])
		}
		tainted := false
		for _, taint := range n.Spec.Taints {
			if taint.Key == "dedicated" && taint.Value == "batch" && taint.Effect == corev1.TaintEffectNoSchedule {
				tainted = true
			}
		}
		if tainted != (pool == "batch") {
			t.Errorf("node %s of pool %s: dedicated=batch taint present=%t", n.Name, pool, tainted)
		}
		if !strings.HasPrefix(n.Spec.ProviderID, "lotse://default/pools/") {
			t.Errorf("node %s has provider ID %q", n.Name, n.Spec.ProviderID)
		}
	}
	if pools["web"] != 2 || pools["batch"] != 1 {
		t.Errorf("nodes per pool: %v", pools)
	}

	// A Deployment of the locally built image, spread over all three nodes.
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "echo", Image: echoImage, ImagePullPolicy: corev1.PullNever,
						Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
					Tolerations: []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "batch", Effect: corev1.TaintEffectNoSchedule}},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
						WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: labels,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	svcOut, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	waitFor(t, 3*time.Minute, "3 running echo pods on 3 nodes", func() (bool, error) {
		list, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err
		}
		onNodes := map[string]bool{}
		pods = nil
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning && podReady(&p) {
				pods = append(pods, p)
				onNodes[p.Spec.NodeName] = true
			}
		}
		return len(pods) == 3 && len(onNodes) == 3, nil
	})

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	mustCLI(t, "cluster", "kubeconfig", name, "--output-file", kubeconfig)
	exec1 := func(pod string, args ...string) (string, error) {
		return kubectlExec(t, kubeconfig, pod, append([]string{"/echo"}, args...)...)
	}
	if !t.Run("pod to pod across nodes", func(t *testing.T) {
		// Pod to pod across nodes.
		for i, p := range pods {
			other := pods[(i+1)%len(pods)]
			out, err := exec1(p.Name, "get", fmt.Sprintf("http://%s:8080/", other.Status.PodIP))
			if err != nil || !strings.Contains(out, other.Name) {
				t.Errorf("pod %s (node %s) -> pod %s (node %s): %v\n%s", p.Name, p.Spec.NodeName, other.Name, other.Spec.NodeName, err, out)
			}
			// No NAT between pods: the other pod sees this pod's own address.
			if !strings.Contains(out, "you are "+p.Status.PodIP+":") {
				t.Errorf("pod %s (%s) -> pod %s: the peer saw another source address: %s", p.Name, p.Status.PodIP, other.Name, out)
			}
		}
	}) {
		return
	}
	if !t.Run("services by DNS name and the API", func(t *testing.T) {
		// A ClusterIP Service by its DNS name, and the API server through the kubernetes Service.
		waitFor(t, time.Minute, "the Service by DNS name", func() (bool, error) {
			out, err := exec1(pods[0].Name, "get", "http://web.default.svc.cluster.local/")
			return err == nil && strings.Contains(out, "hello from web-"), fmt.Errorf("%v: %s", err, out)
		})
		if out, err := exec1(pods[1].Name, "get", "-k", "https://kubernetes.default.svc.cluster.local/version"); err != nil || !strings.Contains(out, "gitVersion") {
			t.Errorf("pod -> kubernetes Service: %v\n%s", err, out)
		}
	}) {
		return
	}
	if !t.Run("kubectl logs", func(t *testing.T) {
		// kubectl logs.
		logs, err := exec.Command(kubectlPath(t), "--kubeconfig", kubeconfig, "logs", pods[0].Name).CombinedOutput()
		if err != nil || !strings.Contains(string(logs), "listening") {
			t.Errorf("kubectl logs: %v\n%s", err, logs)
		}
	}) {
		return
	}
	if !t.Run("NodePort from the host", func(t *testing.T) {
		// A NodePort answers from the host.
		nodePort := svcOut.Spec.Ports[0].NodePort
		var nodeIP string
		for _, a := range nodes.Items[0].Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				nodeIP = a.Address
			}
		}
		waitFor(t, time.Minute, "the NodePort from the host", func() (bool, error) {
			resp, err := (&http.Client{Timeout: 3 * time.Second}).Get(fmt.Sprintf("http://%s:%d/", nodeIP, nodePort))
			if err != nil {
				return false, err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode == 200 && strings.Contains(string(body), "hello from"), nil
		})

	}) {
		return
	}
	if !t.Run("killed node processes come back", func(t *testing.T) {
		// Killing a machine's processes: the supervisor brings them back and the
		// node is Ready again (containerd's running containers survive it).
		machines := &lotsev1.MachineList{}
		if err := mc.List(ctx, machines, client.InNamespace("default"), client.MatchingLabels{lotsev1.LabelCluster: name}); err != nil {
			t.Fatal(err)
		}
		victim := machines.Items[0].Name
		killedAt := time.Now()
		for _, proc := range []string{"containerd-0", "kubelet-0", "kube-proxy-0"} {
			killAndAwaitRestart(t, name+"/machines/"+victim+"/"+proc)
		}
		// Evidence newer than the kills: the new kubelet renewed the node's
		// lease (a Ready condition from before would prove nothing).
		waitFor(t, 2*time.Minute, "the restarted kubelet of "+victim+" renewing its lease", func() (bool, error) {
			lease, err := cs.CoordinationV1().Leases("kube-node-lease").Get(ctx, victim, metav1.GetOptions{})
			if err != nil || lease.Spec.RenewTime == nil {
				return false, err
			}
			return lease.Spec.RenewTime.After(killedAt), fmt.Errorf("lease renewed at %s, kill at %s", lease.Spec.RenewTime, killedAt)
		})
		waitClusterReady(t, mc, name, 3*time.Minute)

	}) {
		return
	}
	if !t.Run("lotse crash: machines adopted", func(t *testing.T) {
		// A crash of lotse leaves the machines running; the next lotse adopts
		// their processes instead of starting new ones.
		var nodeProcs []supervisor.Found
		for _, p := range clusterProcesses(name) {
			if strings.Contains(p.Name, "/machines/") {
				nodeProcs = append(nodeProcs, p)
			}
		}
		if len(nodeProcs) != 9 {
			t.Errorf("%d node processes, want 9 (containerd, kubelet, kube-proxy on 3 machines)", len(nodeProcs))
		}
		supLog := filepath.Join(env.stateDir, "logs", "supervisor.log")
		offset := int64(0)
		if fi, err := os.Stat(supLog); err == nil {
			offset = fi.Size()
		}
		env.crash()
		if err := env.start(); err != nil {
			t.Fatal(err)
		}
		mc = mgmtClient(t)
		// The status may still say Ready from before the crash: wait until the
		// new lotse has reconciled every machine, which its supervisor log shows.
		waitFor(t, 3*time.Minute, "every node process handled by the new lotse", func() (bool, error) {
			data, err := os.ReadFile(supLog)
			if err != nil || int64(len(data)) < offset {
				return false, err
			}
			since := string(data[offset:])
			for _, p := range nodeProcs {
				if !strings.Contains(since, p.Name+": ") {
					return false, nil
				}
			}
			return true, nil
		})
		waitClusterReady(t, mc, name, 3*time.Minute)
		for _, p := range nodeProcs {
			if !stillRunning(p) {
				t.Errorf("%s (pid %d) did not survive the restart of lotse", p.Name, p.PID)
			}
		}
		t.Logf("lotse restarted; %d node processes adopted", len(nodeProcs))

	}) {
		return
	}
	if !t.Run("scale down drains", func(t *testing.T) {
		// Scale pool web from 2 to 1: the removed node is drained (cordoned,
		// pods evicted) before its machine goes; the Deployment stays whole.
		// The maximum goes down too: a lower minimum alone leaves an
		// autoscaled pool at its size until a node is unneeded (as the
		// cluster-autoscaler does).
		before := map[string]bool{}
		ms0 := &lotsev1.MachineList{}
		if err := mc.List(ctx, ms0, client.InNamespace("default"), client.MatchingLabels{lotsev1.LabelCluster: name, lotsev1.LabelPool: "web"}); err != nil {
			t.Fatal(err)
		}
		for _, m := range ms0.Items {
			before[m.Name] = true
		}
		updateCluster(t, mc, name, func(c *lotsev1.Cluster) { c.Spec.Workers[0].Minimum, c.Spec.Workers[0].Maximum = 1, 1 })
		var removed string
		var sawCordon bool
		waitFor(t, 5*time.Minute, "pool web at 1 machine", func() (bool, error) {
			ms := &lotsev1.MachineList{}
			if err := mc.List(ctx, ms, client.InNamespace("default"), client.MatchingLabels{lotsev1.LabelCluster: name, lotsev1.LabelPool: "web"}); err != nil {
				return false, err
			}
			left := map[string]bool{}
			for _, m := range ms.Items {
				left[m.Name] = true
				if !m.DeletionTimestamp.IsZero() {
					if n, err := cs.CoreV1().Nodes().Get(ctx, m.Name, metav1.GetOptions{}); err == nil && n.Spec.Unschedulable {
						sawCordon = true
					}
				}
			}
			for m := range before {
				if !left[m] {
					removed = m
				}
			}
			return len(ms.Items) == 1 && removed != "", nil
		})
		if !sawCordon {
			t.Errorf("machine %s went away without its node being seen cordoned", removed)
		}
		waitFor(t, 3*time.Minute, "the Deployment whole again on the remaining nodes", func() (bool, error) {
			d, err := cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
			return err == nil && d.Status.ReadyReplicas == 3, err
		})
		t.Logf("pool web scaled to 1: machine %s drained (cordon seen: %t) and removed", removed, sawCordon)
		if _, err := cs.CoreV1().Nodes().Get(ctx, removed, metav1.GetOptions{}); err == nil {
			t.Errorf("node %s still exists after its machine was removed", removed)
		}
		waitClusterReady(t, mc, name, 3*time.Minute)

	}) {
		return
	}
	if !t.Run("delete leaves nothing", func(t *testing.T) {
		// Delete the cluster: no process, netns, mount, veth, cgroup or directory is left.
		network, err := local.ParseNetwork(local.NetworkID(env.owner, "clusters/default/"+name), cl.Status.NodesCIDR)
		if err != nil {
			t.Fatal(err)
		}
		mustCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m")
		deleted = true
		t.Logf("cluster deleted; checking the host for leftovers of network %s (%s)", network.ID, network.CIDR)
		if left := clusterProcesses(name); len(left) > 0 {
			t.Errorf("processes left: %+v", left)
		}
		if nss, _ := netns.List("l"); containsID(nss, network.ID) {
			t.Errorf("network namespaces left: %v", nss)
		}
		if out, _ := exec.Command("ip", "-o", "link", "show").CombinedOutput(); strings.Contains(string(out), network.HostLink()) {
			t.Errorf("host link %s left", network.HostLink())
		}
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(mounts), "\n") {
			if strings.Contains(line, clusterDir(name)) || strings.Contains(line, "/run/lotse/"+network.ID) {
				t.Errorf("mount left: %s", line)
			}
		}
		// By the link too: the network may already serve a cluster another
		// test creates meanwhile.
		if out, _ := exec.Command("ip", "route", "show", network.CIDR.String(), "dev", network.HostLink()).CombinedOutput(); strings.Contains(string(out), network.CIDR.String()) {
			t.Errorf("host route to %s left:\n%s", network.CIDR, out)
		}
		if out, _ := exec.Command("iptables", "-w", "-S").CombinedOutput(); strings.Contains(string(out), "LOTSE-"+network.ID) {
			t.Errorf("firewall rules of %s left", network.ID)
		}
		if cg, _ := filepath.Glob("/sys/fs/cgroup/*/lotse-" + network.ID + "-*"); len(cg) > 0 {
			t.Errorf("cgroups left: %v", cg)
		}
		if _, err := os.Stat(clusterDir(name)); err == nil {
			t.Errorf("directory %s left", clusterDir(name))
		}
		if left, _ := filepath.Glob(filepath.Join(local.DiskRoot(env.stateDir), network.ID+"-*")); len(left) > 0 {
			t.Errorf("machine disks left: %v", left)
		}
		if left, _ := filepath.Glob("/run/lotse/" + network.ID + "-*"); len(left) > 0 {
			t.Errorf("runtime directories left: %v", left)
		}
		for _, f := range supervisor.FindProcesses(env.owner) {
			if strings.Contains(f.Name, "/"+name+"/") {
				t.Errorf("process %s (pid %d) left", f.Name, f.PID)
				_ = syscall.Kill(f.PID, syscall.SIGKILL)
			}
		}
	}) {
		return
	}
}

func containsID(names []string, id string) bool {
	for _, n := range names {
		if strings.Contains(n, id) {
			return true
		}
	}
	return false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func tenantClient(t testing.TB, name string) kubernetes.Interface {
	t.Helper()
	return kubernetes.NewForConfigOrDie(tenantConfig(t, name))
}

// tenantConfig is the admin REST config of a cluster.
func tenantConfig(t testing.TB, name string) *rest.Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(clusterDir(name), "pki", "admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	// Not client-go's default 5 requests a second: benchmarks time what
	// goes through these clients, and tests watch and poll with them.
	cfg.QPS, cfg.Burst = 1000, 1000
	return cfg
}
