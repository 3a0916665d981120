package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
	"github.com/lotse/lotse/internal/federation/agent"
	"github.com/lotse/lotse/internal/federation/propagation"
	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/netns"
)

// startFleetAgent runs `lotse fleet agent` for a pull-mode member on this
// host until stopped or the test ends; stop waits for it to exit.
func startFleetAgent(t testing.TB, member, bootstrap, memberKubeconfig string) (stop func()) {
	t.Helper()
	cmd := exec.Command(env.binary, "fleet", "agent", "--member", member, "--fleet-kubeconfig", bootstrap,
		"--kubeconfig", memberKubeconfig, "--identity-secret", "lotse-fleet-host-agent/fleet-identity", "--lease-duration", "8s")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("lotse fleet agent:\n%s", out.String())
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestFleetPullMember: a member registered in pull mode gets its work
// through its agent alone. The fleet holds no credentials of the member:
// the agent reaches the fleet with a bootstrap token, gets its own
// certificate, applies the Works of its execution namespace, reports
// their status (aggregated into the template), and renews a lease whose
// absence makes the member not ready. The fleet's DNS answers for its
// Services from what the agent reports. An object deleted from the fleet
// goes from the member, and leaving the fleet removes the rest. Then
// `register --kubeconfig-file --agent-image --fleet-endpoint` deploys the
// agent into the member, and that agent, in its pod, joins and applies
// its work.
func TestFleetPullMember(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	mc := mgmtClient(t)
	const fleet, member = "fp", "fp-m"
	// One node: its load balancers get addresses for the fleet's DNS.
	if err := mc.Create(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: member},
		Spec: lotsev1.ClusterSpec{Workers: []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}}}); err != nil {
		t.Fatal(err)
	}
	f := &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}}
	f.Spec.DNS = lotsev1.FleetDNS{Zone: "pull.fleet.example", TTL: 2}
	if err := mc.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := lotseCLI(t, "fleet", "delete", fleet, "--wait", "--timeout", "3m"); err != nil || !strings.Contains(out, "fleet default/"+fleet+" deleted after") {
			t.Errorf("lotse fleet delete: %v\n%s", err, out)
		}
		_ = mc.Delete(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: member}})
	})
	waitClusterReady(t, mc, member, 5*time.Minute)
	waitFor(t, 4*time.Minute, "the fleet Ready", func() (bool, error) {
		f := &lotsev1.Fleet{}
		if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, f); err != nil {
			return false, err
		}
		return f.Status.Phase == lotsev1.FleetReady, fmt.Errorf("phase %s", f.Status.Phase)
	})

	// Bad input: register needs a way to run the agent.
	if out, err := lotseCLI(t, "fleet", "register", fleet, member); err == nil {
		t.Errorf("register without --kubeconfig-file or --bootstrap-kubeconfig succeeded: %s", out)
	}
	bootstrap := filepath.Join(t.TempDir(), "bootstrap.kubeconfig")
	mustCLI(t, "fleet", "register", fleet, member, "--bootstrap-kubeconfig", bootstrap, "--region", "eu", "--labels", "mode=pull")
	m := &lotsev1.FleetMember{}
	if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: member}, m); err != nil {
		t.Fatal(err)
	}
	if m.Spec.SyncMode != lotsev1.SyncPull || m.Spec.Cluster != "" || m.Spec.KubeconfigSecretRef != nil {
		t.Fatalf("the member holds a way into the cluster: %+v", m.Spec)
	}
	memberKubeconfig := filepath.Join(clusterDir(member), "pki", "admin.kubeconfig")
	stopAgent := startFleetAgent(t, member, bootstrap, memberKubeconfig)
	memberReady := func(what string, want metav1.ConditionStatus, after time.Time) {
		t.Helper()
		waitFor(t, 2*time.Minute, what, func() (bool, error) {
			if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: member}, m); err != nil {
				return false, err
			}
			c := meta.FindStatusCondition(m.Status.Conditions, lotsev1.ConditionMemberReady)
			if c == nil {
				return false, fmt.Errorf("no Ready condition")
			}
			return c.Status == want && !c.LastTransitionTime.Time.Before(after.Truncate(time.Second)), fmt.Errorf("Ready %s since %s: %s", c.Status, c.LastTransitionTime, c.Message)
		})
	}
	memberReady("the member ready through its agent's lease", metav1.ConditionTrue, time.Time{})
	if m.Status.KubernetesVersion == "" || m.Status.Region != "eu" || m.Status.ResourceSummary == nil {
		t.Errorf("status from the agent: version %q, region %q, room %+v", m.Status.KubernetesVersion, m.Status.Region, m.Status.ResourceSummary)
	}

	fc := fleetClient(t, mc, fleet)
	mcl := memberClient(t, member)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	labels := map[string]string{"app": "web"}
	must(fc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pull"}}))
	must(fc.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "pull", Name: "cfg"}, Data: map[string]string{"v": "1"}}))
	must(fc.Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "pull", Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "web", Image: "registry.invalid/web:1"}}}}}}))
	must(fc.Create(ctx, &policyv1.ClusterPropagationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "pull"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "v1", Kind: "ConfigMap", Namespace: "pull"}, {APIVersion: "apps/v1", Kind: "Deployment", Namespace: "pull"}},
		Placement:         policyv1.Placement{ClusterAffinity: &policyv1.ClusterAffinity{LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"mode": "pull"}}}}}}))

	waitFor(t, 2*time.Minute, "the ConfigMap and the Deployment in the member", func() (bool, error) {
		cm, d := &corev1.ConfigMap{}, &appsv1.Deployment{}
		if err := mcl.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "cfg"}, cm); err != nil {
			return false, err
		}
		if err := mcl.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "web"}, d); err != nil {
			return false, err
		}
		return cm.Data["v"] == "1" && ptr.Deref(d.Spec.Replicas, 0) == 2 && cm.Labels[lotsev1.LabelFleet] == fleet, fmt.Errorf("configmap %v %v", cm.Data, cm.Labels)
	})
	works := &workv1.WorkList{}
	must(fc.List(ctx, works, client.InNamespace(workv1.ExecutionNamespace(member))))
	if len(works.Items) < 2 {
		t.Errorf("%d Works in the member's execution namespace, want the ConfigMap's and the Deployment's at least", len(works.Items))
	}
	// The member's Deployment status, as the agent reported it, is the
	// template's (its controllers made the pods; no node runs them).
	waitFor(t, 2*time.Minute, "the template's status from the member's", func() (bool, error) {
		md, d := &appsv1.Deployment{}, &appsv1.Deployment{}
		if err := mcl.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "web"}, md); err != nil {
			return false, err
		}
		if err := fc.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "web"}, d); err != nil {
			return false, err
		}
		return md.Status.Replicas >= 2 && d.Status.Replicas == md.Status.Replicas && d.Status.ObservedGeneration == d.Generation,
			fmt.Errorf("fleet status %+v, member status %+v", d.Status, md.Status)
	})
	// The fleet's DNS zone answers for a pull-mode member's Services with
	// what its agent reports: nothing for a Service without a ready
	// endpoint (front: its pods' image is nowhere), the member's load-balancer
	// address for one that serves (edge: no selector, its endpoints are
	// its own), in the zone and under the member's region.
	must(fc.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "pull", Name: "front"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, Selector: labels, Ports: []corev1.ServicePort{{Port: 80}}}}))
	must(fc.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "pull", Name: "edge"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}}}))
	must(fc.Create(ctx, &policyv1.ClusterPropagationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "pull-services"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "v1", Kind: "Service", Namespace: "pull"}}}}))
	var edgeIP string
	waitFor(t, 2*time.Minute, "the Services in the member, edge with its load balancer", func() (bool, error) {
		if err := mcl.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "front"}, &corev1.Service{}); err != nil {
			return false, err
		}
		edge := &corev1.Service{}
		if err := mcl.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "edge"}, edge); err != nil {
			return false, err
		}
		if len(edge.Status.LoadBalancer.Ingress) == 0 {
			return false, fmt.Errorf("edge has no load-balancer address yet")
		}
		edgeIP = edge.Status.LoadBalancer.Ingress[0].IP
		return edgeIP != "", nil
	})
	cur := &lotsev1.Fleet{}
	must(mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, cur))
	if cur.Status.DNS == nil || cur.Status.DNS.Server == "" {
		t.Fatalf("the fleet serves no DNS: %+v", cur.Status.DNS)
	}
	dnsServer := cur.Status.DNS.Server
	answers := func(name string, want ...string) func() (bool, error) {
		return func() (bool, error) {
			rcode, ips, _ := dnsQuery(t, dnsServer, name, dns.TypeA)
			return rcode == dns.RcodeSuccess && slices.Equal(ips, want), fmt.Errorf("rcode %d, %v", rcode, ips)
		}
	}
	waitFor(t, time.Minute, "DNS: edge answered with the member's load balancer", answers("edge.pull.svc.pull.fleet.example.", edgeIP))
	waitFor(t, time.Minute, "DNS: edge answered under the member's region", answers("edge.pull.svc.eu.pull.fleet.example.", edgeIP))
	if ok, err := answers("edge.pull.svc.us.pull.fleet.example.")(); !ok {
		t.Errorf("DNS: edge under another region: %v", err)
	}
	// front: once the agent has reported on its current copy (no ready
	// endpoint), no answer.
	waitFor(t, time.Minute, "the agent's report on front", func() (bool, error) {
		w := &workv1.Work{}
		if err := fc.Get(ctx, client.ObjectKey{Namespace: workv1.ExecutionNamespace(member), Name: propagation.WorkName("Service", "pull", "front")}, w); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(w.Status.Conditions, workv1.ConditionApplied)
		return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == w.Generation, fmt.Errorf("conditions %+v", w.Status.Conditions)
	})
	if ok, err := answers("front.pull.svc.pull.fleet.example.")(); !ok {
		t.Errorf("DNS: front, with no ready endpoint: %v", err)
	}
	rb := &workv1.ResourceBinding{}
	must(fc.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "web-deployment"}, rb))
	if len(rb.Status.AggregatedStatus) != 1 || !rb.Status.AggregatedStatus[0].Applied || rb.Status.AggregatedStatus[0].ClusterName != member {
		t.Errorf("binding status %+v", rb.Status)
	}

	// A change in the fleet reaches the member.
	cm := &corev1.ConfigMap{}
	must(fc.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "cfg"}, cm))
	cm.Data["v"] = "2"
	must(fc.Update(ctx, cm))
	waitFor(t, time.Minute, "the change in the member", func() (bool, error) {
		got := &corev1.ConfigMap{}
		err := mcl.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "cfg"}, got)
		return err == nil && got.Data["v"] == "2", fmt.Errorf("%v %v", got.Data, err)
	})

	// The agent stops: the member is not ready once its lease runs out;
	// started again (with the identity it kept), it is.
	stopAgent()
	stoppedAt := time.Now()
	memberReady("the member not ready without its agent", metav1.ConditionFalse, stoppedAt)
	// A member that is not ready is not answered (within the TTL).
	waitFor(t, time.Minute, "DNS: edge without the member that is not ready", answers("edge.pull.svc.pull.fleet.example."))
	restartedAt := time.Now()
	startFleetAgent(t, member, bootstrap, memberKubeconfig)
	memberReady("the member ready again", metav1.ConditionTrue, restartedAt)

	// Deleted in the fleet, gone from the member.
	must(fc.Delete(ctx, cm))
	waitFor(t, time.Minute, "the ConfigMap gone from the member", func() (bool, error) {
		err := mcl.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "cfg"}, &corev1.ConfigMap{})
		return apierrors.IsNotFound(err), err
	})

	// Leaving: the agent removes the rest, and the member's place in the
	// fleet goes.
	mustCLI(t, "fleet", "unjoin", fleet, member)
	if err := mcl.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "web"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("the Deployment stayed in the member after it left: %v", err)
	}
	waitFor(t, time.Minute, "the execution namespace gone", func() (bool, error) {
		err := fc.Get(ctx, client.ObjectKey{Name: workv1.ExecutionNamespace(member)}, &corev1.Namespace{})
		return apierrors.IsNotFound(err), err
	})

	// Register's deployment of the agent into a member, and that agent at
	// work in a pod there (the same cluster, as a second member now that
	// the first has left). The member reaches the fleet's API as a cluster
	// elsewhere reaches a fleet's public endpoint: here through a
	// forwarder on its network's gateway, which the test opens (on this
	// host a member's machines otherwise reach only their own control
	// plane), given to register with --fleet-endpoint.
	const deployed = "fp-d"
	agentImage := importAgentImage(t, member)
	fleetKubeconfig := fleetKubeconfigOf(t, mc, fleet)
	fleetEndpoint := forwardFromGateway(t, member, strings.TrimPrefix(fleetKubeconfig.Host, "https://"))
	out := mustCLI(t, "fleet", "register", fleet, deployed, "--kubeconfig-file", memberKubeconfig, "--agent-image", agentImage,
		"--fleet-endpoint", fleetEndpoint, "--labels", "mode=deployed")
	if !strings.Contains(out, "its agent runs in namespace lotse-fleet-agent of the member") {
		t.Errorf("register: %s", out)
	}
	mcs := tenantClient(t, member)
	d, err := mcs.AppsV1().Deployments("lotse-fleet-agent").Get(ctx, "lotse-fleet-agent", metav1.GetOptions{})
	must(err)
	pod := d.Spec.Template.Spec
	if c := pod.Containers[0]; c.Image != agentImage || !slices.Contains(c.Command, "--member="+deployed) || c.Command[0] != images.ManagerBinary ||
		!ptr.Deref(c.SecurityContext.RunAsNonRoot, false) || pod.ServiceAccountName != "lotse-fleet-agent" {
		t.Errorf("the agent's Deployment: %+v", pod)
	}
	given, err := mcs.CoreV1().Secrets("lotse-fleet-agent").Get(ctx, "fleet-bootstrap", metav1.GetOptions{})
	must(err)
	checkBootstrap := func(given *corev1.Secret) {
		t.Helper()
		givenCfg, err := clientcmd.RESTConfigFromKubeConfig(given.Data["kubeconfig"])
		must(err)
		issued := &corev1.Secret{}
		must(mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: deployed + "-fleet-agent"}, issued))
		issuedCfg, err := clientcmd.RESTConfigFromKubeConfig(issued.Data["kubeconfig"])
		must(err)
		issuedURL, err := url.Parse(issuedCfg.Host)
		must(err)
		if givenCfg.BearerToken != issuedCfg.BearerToken || givenCfg.Host != fleetEndpoint || string(givenCfg.CAData) != string(issuedCfg.CAData) ||
			givenCfg.ServerName != issuedURL.Hostname() {
			t.Errorf("the member's bootstrap kubeconfig: server %s (tls-server-name %q), want the fleet's token and CA at %s, checked as %s",
				givenCfg.Host, givenCfg.ServerName, fleetEndpoint, issuedCfg.Host)
		}
	}
	checkBootstrap(given)
	crb, err := mcs.RbacV1().ClusterRoleBindings().Get(ctx, "lotse-fleet-agent", metav1.GetOptions{})
	must(err)
	if crb.RoleRef.Name != "cluster-admin" || len(crb.Subjects) != 1 || crb.Subjects[0].Name != "lotse-fleet-agent" {
		t.Errorf("the agent's binding in the member: %+v", crb)
	}
	// The agent in its pod joins (token, CSR, its own certificate kept in
	// the member), renews its lease and applies the work meant for it.
	deployedReady := func() (bool, error) {
		dm := &lotsev1.FleetMember{}
		if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: deployed}, dm); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(dm.Status.Conditions, lotsev1.ConditionMemberReady)
		if c == nil {
			return false, fmt.Errorf("no Ready condition")
		}
		return c.Status == metav1.ConditionTrue, fmt.Errorf("Ready %s: %s", c.Status, c.Message)
	}
	waitFor(t, 3*time.Minute, "the deployed agent's member ready through its lease", deployedReady)
	if _, err := mcs.CoreV1().Secrets("lotse-fleet-agent").Get(ctx, "fleet-identity", metav1.GetOptions{}); err != nil {
		t.Errorf("the deployed agent keeps no identity in the member: %v", err)
	}
	must(fc.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "pull", Name: "for-deployed"}, Data: map[string]string{"v": "d"}}))
	must(fc.Create(ctx, &policyv1.ClusterPropagationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deployed"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "v1", Kind: "ConfigMap", Namespace: "pull", Name: "for-deployed"}},
		Placement:         policyv1.Placement{ClusterAffinity: &policyv1.ClusterAffinity{ClusterNames: []string{deployed}}}}}))
	waitFor(t, 2*time.Minute, "the ConfigMap applied by the agent in the pod", func() (bool, error) {
		got := &corev1.ConfigMap{}
		if err := mcl.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "for-deployed"}, got); err != nil {
			return false, err
		}
		by := got.Annotations[agent.AnnotationWork]
		return got.Data["v"] == "d" && strings.HasPrefix(by, workv1.ExecutionNamespace(deployed)+"/"), fmt.Errorf("data %v, applied for %q", got.Data, by)
	})
	// Registered again (what an agent whose certificate expired needs),
	// without --fleet-endpoint: the member stays, its agent gets the
	// fleet's current token at the endpoint given the first time. An
	// agent without its identity (here: deleted, with its pod) joins
	// again with that token.
	if _, err := lotseCLI(t, "fleet", "register", fleet, deployed, "--kubeconfig-file", memberKubeconfig, "--agent-image", agentImage,
		"--region", "elsewhere"); err == nil {
		t.Error("registering again with another region succeeded")
	}
	out = mustCLI(t, "fleet", "register", fleet, deployed, "--kubeconfig-file", memberKubeconfig, "--agent-image", agentImage)
	if !strings.Contains(out, "registered again") {
		t.Errorf("register again: %s", out)
	}
	given, err = mcs.CoreV1().Secrets("lotse-fleet-agent").Get(ctx, "fleet-bootstrap", metav1.GetOptions{})
	must(err)
	checkBootstrap(given)
	must(mcs.CoreV1().Secrets("lotse-fleet-agent").Delete(ctx, "fleet-identity", metav1.DeleteOptions{}))
	must(mcs.CoreV1().Pods("lotse-fleet-agent").DeleteCollection(ctx, metav1.DeleteOptions{},
		metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=lotse-fleet-agent"}))
	waitFor(t, 3*time.Minute, "a new identity for the agent, asked for with the token", func() (bool, error) {
		_, err := mcs.CoreV1().Secrets("lotse-fleet-agent").Get(ctx, "fleet-identity", metav1.GetOptions{})
		return err == nil, err
	})
	waitFor(t, 2*time.Minute, "the member ready with its agent's new identity", deployedReady)
	mustCLI(t, "fleet", "unjoin", fleet, deployed)
	waitFor(t, time.Minute, "the deployed agent's ConfigMap gone with its member", func() (bool, error) {
		err := mcl.Get(ctx, client.ObjectKey{Namespace: "pull", Name: "for-deployed"}, &corev1.ConfigMap{})
		return apierrors.IsNotFound(err), err
	})
}

// importAgentImage packs the lotse under test as the agent's image (lotse
// at the path register's Deployment runs) and imports it into the
// machines of one cluster only: every node of the run need not load it.
func importAgentImage(t *testing.T, cluster string) string {
	t.Helper()
	return importImage(t, cluster, images.FromBinary("lotse-fleet-agent", "e2e", env.binary, []string{images.ManagerBinary}))
}

// forwardFromGateway opens target (host:port on this host) to the
// machines of a cluster: a TCP forwarder on its network's gateway and a
// firewall rule that lets its machines reach it, both gone when the test
// ends. It returns the forwarder's https URL.
func forwardFromGateway(t *testing.T, cluster, target string) string {
	t.Helper()
	ctx := context.Background()
	nodes, err := tenantClient(t, cluster).CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("the nodes of %s: %v", cluster, err)
	}
	var nodeIP net.IP
	for _, a := range nodes.Items[0].Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			nodeIP = net.ParseIP(a.Address)
		}
	}
	var gateway net.IP
	var link string
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, iface := range ifaces {
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if ipnet, ok := a.(*net.IPNet); ok && strings.HasPrefix(iface.Name, "lh-") && nodeIP != nil && ipnet.Contains(nodeIP) {
				gateway, link = ipnet.IP, iface.Name
			}
		}
	}
	if gateway == nil {
		t.Fatalf("no host link of %s's network (node %v)", cluster, nodeIP)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(gateway.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	// Open connections (the agent's watches) are closed with the listener.
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if open == nil {
			_ = c.Close()
			return false
		}
		open[c] = true
		return true
	}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				out, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					_ = in.Close()
					return
				}
				if !track(in) || !track(out) {
					_ = in.Close()
					_ = out.Close()
					return
				}
				// Either side ending ends both.
				go func() { _, _ = io.Copy(out, in); _ = out.Close(); _ = in.Close() }()
				_, _ = io.Copy(in, out)
				_ = in.Close()
				_ = out.Close()
			}()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	rule := []string{"INPUT", "-i", link, "-p", "tcp", "-d", gateway.String(), "--dport", port, "-j", "ACCEPT"}
	if err := netns.IPTables(ctx, "", "filter", append([]string{"-I", rule[0], "1"}, rule[1:]...)...); err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.IPTables(ctx, "", "filter", append([]string{"-D"}, rule...)...); err != nil {
			t.Errorf("removing the forwarder's firewall rule %v: %v", rule, err)
		}
		_ = ln.Close()
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		open = nil
		mu.Unlock()
	})
	return "https://" + net.JoinHostPort(gateway.String(), port)
}
