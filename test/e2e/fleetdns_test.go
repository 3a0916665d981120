package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
	"github.com/lotse/lotse/internal/federation/access"
)

// dnsQuery asks the fleet DNS server and returns the rcode and the A
// records.
func dnsQuery(t testing.TB, server, name string, qtype uint16) (int, []string, *dns.Msg) {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	resp, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(req, server)
	if err != nil {
		return -1, nil, nil
	}
	return resp.Rcode, answerIPs(resp), resp
}

// answerIPs returns the A records of an answer, sorted.
func answerIPs(resp *dns.Msg) []string {
	var ips []string
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	sort.Strings(ips)
	return ips
}

// waitFleetDNS waits for the fleet Ready with n ready members and returns
// its DNS server's address.
func waitFleetDNS(t testing.TB, mc client.Client, fleet string, n int32) string {
	t.Helper()
	var server string
	waitFor(t, 4*time.Minute, fmt.Sprintf("the fleet Ready with %d ready members", n), func() (bool, error) {
		cur := &lotsev1.Fleet{}
		if err := mc.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: fleet}, cur); err != nil {
			return false, err
		}
		if cur.Status.DNS != nil {
			server = cur.Status.DNS.Server
		}
		return cur.Status.Phase == lotsev1.FleetReady && cur.Status.ReadyMembers == n && server != "",
			fmt.Errorf("phase %s, %d ready, dns %+v", cur.Status.Phase, cur.Status.ReadyMembers, cur.Status.DNS)
	})
	return server
}

// serveFront creates, in the fleet, the namespace web with the
// LoadBalancer Service front (propagated to every member) and behind it a
// Deployment of one echo server propagated to the named members.
func serveFront(t testing.TB, fc client.Client, members ...string) {
	t.Helper()
	ctx := context.Background()
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "front"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "front"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
		&policyv1.ClusterPropagationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "services"}, Spec: policyv1.PropagationSpec{
			ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "v1", Kind: "Service"}}}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "front"},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "front"}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "front"}}, Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "echo", Image: echoImage, ImagePullPolicy: corev1.PullNever}}}}}},
		&policyv1.PropagationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "front"}, Spec: policyv1.PropagationSpec{
			ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "apps/v1", Kind: "Deployment", Name: "front"}},
			Placement:         policyv1.Placement{ClusterAffinity: &policyv1.ClusterAffinity{ClusterNames: members}}}},
	} {
		if err := fc.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
}

// frontAddress waits for the member's copy of web/front to have a
// load-balancer address and returns it.
func frontAddress(t testing.TB, member string) string {
	t.Helper()
	var ip string
	mc := memberClient(t, member)
	waitFor(t, 2*time.Minute, member+"'s load-balancer address", func() (bool, error) {
		svc := &corev1.Service{}
		if err := mc.Get(context.Background(), client.ObjectKey{Namespace: "web", Name: "front"}, svc); err != nil {
			return false, err
		}
		if len(svc.Status.LoadBalancer.Ingress) == 0 {
			return false, fmt.Errorf("no ingress yet")
		}
		ip = svc.Status.LoadBalancer.Ingress[0].IP
		return net.ParseIP(ip) != nil, nil
	})
	return ip
}

// TestFleetDNS: the fleet's zone answers a propagated LoadBalancer Service
// with the address of each ready member that serves it (here the member
// with a node; the workerless one has none), a region's name only with
// that region's, unknown names with NXDOMAIN, the apex with SOA; a member
// without a ready endpoint behind its copy leaves the answers; a member
// whose API stops answering leaves them within the probe interval (its
// endpoints still look ready), and comes back; a hibernating member
// leaves them at once (its pods drain first).
func TestFleetDNS(t *testing.T) {
	parallel(t)
	buildEchoImage(t)
	ctx := context.Background()
	mc := mgmtClient(t)
	const fleet = "fd"
	eu := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "fd-eu"}}
	eu.Spec.Region = "eu"
	eu.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
	us := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "fd-us"}}
	us.Spec.Region = "us"
	for _, c := range []*lotsev1.Cluster{eu, us} {
		if err := mc.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	f := &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}}
	f.Spec.DNS = lotsev1.FleetDNS{Zone: "shop.fleet.example", TTL: 2}
	if err := mc.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = mc.Delete(ctx, &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}})
		waitFor(t, 4*time.Minute, "the fleet gone", func() (bool, error) {
			err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, &lotsev1.Fleet{})
			return apierrors.IsNotFound(err), err
		})
		for _, c := range []*lotsev1.Cluster{eu, us} {
			_ = mc.Delete(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: c.Name}})
		}
	})
	if err := mc.Create(ctx, &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: eu.Name},
		Spec: lotsev1.FleetMemberSpec{Fleet: fleet, Cluster: eu.Name}}); err != nil {
		t.Fatal(err)
	}
	// us joins as any cluster would: with a kubeconfig, from which the
	// fleet makes its own least-privileged identity there.
	waitClusterReady(t, mc, us.Name, 5*time.Minute)
	usAdmin := filepath.Join(clusterDir(us.Name), "pki", "admin.kubeconfig")
	mustCLI(t, "fleet", "join", fleet, "--kubeconfig-file", usAdmin, "--as", us.Name, "--region", "us")
	pushIdentity(t, mc, usAdmin, fleet, us.Name)
	waitClusterReady(t, mc, eu.Name, 15*time.Minute)
	server := waitFleetDNS(t, mc, fleet, 2)

	fc := fleetClient(t, mc, fleet)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Behind the Service, an echo server in the member with a node (the
	// other has none to run it), which gives it a load-balancer address.
	serveFront(t, fc, eu.Name)
	lbIP := frontAddress(t, eu.Name)
	const name = "front.web.svc.shop.fleet.example."
	waitFor(t, time.Minute, "the fleet's answer", func() (bool, error) {
		rcode, ips, _ := dnsQuery(t, server, name, dns.TypeA)
		return rcode == dns.RcodeSuccess && strings.Join(ips, ",") == lbIP, fmt.Errorf("rcode %d, %v", rcode, ips)
	})
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
		ips   string
	}{
		{"front.web.svc.eu.shop.fleet.example.", dns.TypeA, dns.RcodeSuccess, lbIP},
		{"front.web.svc.us.shop.fleet.example.", dns.TypeA, dns.RcodeSuccess, ""},
		{"back.web.svc.shop.fleet.example.", dns.TypeA, dns.RcodeNameError, ""},
		{"shop.fleet.example.", dns.TypeSOA, dns.RcodeSuccess, ""},
	} {
		rcode, ips, resp := dnsQuery(t, server, tc.name, tc.qtype)
		if rcode != tc.rcode || strings.Join(ips, ",") != tc.ips {
			t.Errorf("%s %s: rcode %d, %v; want %d, %q", tc.name, dns.TypeToString[tc.qtype], rcode, ips, tc.rcode, tc.ips)
		}
		if tc.qtype == dns.TypeSOA && (resp == nil || len(resp.Answer) != 1 || resp.Answer[0].Header().Rrtype != dns.TypeSOA) {
			t.Errorf("SOA: %v", resp)
		}
	}
	// Without a ready endpoint behind its copy, a member leaves the
	// answers, and comes back with one.
	setFrontReplicas := func(n int32) {
		t.Helper()
		// The fleet writes the template's aggregated status meanwhile.
		must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			d := &appsv1.Deployment{}
			if err := fc.Get(ctx, client.ObjectKey{Namespace: "web", Name: "front"}, d); err != nil {
				return err
			}
			d.Spec.Replicas = ptr.To(n)
			return fc.Update(ctx, d)
		}))
	}
	setFrontReplicas(0)
	waitFor(t, 2*time.Minute, "no answer without a ready endpoint", func() (bool, error) {
		rcode, ips, _ := dnsQuery(t, server, name, dns.TypeA)
		return rcode == dns.RcodeSuccess && len(ips) == 0, fmt.Errorf("rcode %d, %v", rcode, ips)
	})
	setFrontReplicas(1)
	waitFor(t, 2*time.Minute, "the answer with a ready endpoint again", func() (bool, error) {
		rcode, ips, _ := dnsQuery(t, server, name, dns.TypeA)
		return rcode == dns.RcodeSuccess && strings.Join(ips, ",") == lbIP, fmt.Errorf("rcode %d, %v", rcode, ips)
	})
	capacityDivision(t, mc, fc, eu.Name, us.Name)

	start := time.Now()
	const queries = 500
	for i := 0; i < queries; i++ {
		dnsQuery(t, server, name, dns.TypeA)
	}
	t.Logf("DNS answer time: %.2f ms on average over %d queries", float64(time.Since(start).Microseconds())/1000/queries, queries)

	// The member's API stops answering (frozen: its endpoints still look
	// ready in the fleet's cache): the probe takes it out of the answers.
	var euAPI int
	for _, p := range clusterProcesses(eu.Name) {
		if componentOf(p.Name) == "kube-apiserver" {
			euAPI = p.PID
		}
	}
	if euAPI == 0 {
		t.Fatal("no kube-apiserver process of " + eu.Name)
	}
	if err := syscall.Kill(euAPI, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			_ = syscall.Kill(euAPI, syscall.SIGCONT)
		}
	})
	waitFor(t, time.Minute, "the unanswering member out of the answers", func() (bool, error) {
		rcode, ips, _ := dnsQuery(t, server, name, dns.TypeA)
		return rcode == dns.RcodeSuccess && len(ips) == 0, fmt.Errorf("rcode %d, %v", rcode, ips)
	})
	t.Logf("the unanswering member left the answers %.1f s after its API froze (probe interval 5 s, TTL 2 s)", time.Since(frozen).Seconds())
	if err := syscall.Kill(euAPI, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	thawed = true
	waitFor(t, 2*time.Minute, "the member back in the answers", func() (bool, error) {
		rcode, ips, _ := dnsQuery(t, server, name, dns.TypeA)
		return rcode == dns.RcodeSuccess && strings.Join(ips, ",") == lbIP, fmt.Errorf("rcode %d, %v", rcode, ips)
	})

	// The member stops: it leaves the answers.
	updateCluster(t, mc, eu.Name, func(c *lotsev1.Cluster) { c.Spec.Hibernation = &lotsev1.HibernationSpec{Enabled: ptr.To(true)} })
	waitFor(t, 5*time.Minute, "the member hibernated", func() (bool, error) {
		cur := getCluster(t, mc, eu.Name)
		return cur.Status.Phase == lotsev1.PhaseHibernated, nil
	})
	stopped := time.Now()
	waitFor(t, time.Minute, "the stopped member out of the answers", func() (bool, error) {
		rcode, ips, _ := dnsQuery(t, server, name, dns.TypeA)
		return rcode == dns.RcodeSuccess && len(ips) == 0, fmt.Errorf("rcode %d, %v", rcode, ips)
	})
	// Hibernation drains the member first, so its ready endpoints go
	// before its API does (the probe, every 5 s, then marks it not ready).
	t.Logf("the stopped member left the answers %.1f s after it hibernated (TTL 2 s)", time.Since(stopped).Seconds())

	// A CRD and a Widget. The push member joined when the fleet had no
	// CRD: its identity may not take either, and the bindings say so and
	// what widens the role (joining again, below).
	must(fc.Create(ctx, widgetsCRD()))
	must(fc.Create(ctx, widgetsPolicy()))
	waitFor(t, time.Minute, "the fleet serving Widgets", func() (bool, error) {
		err := fc.Create(ctx, widgetIn("web", "gizmo"))
		return err == nil || apierrors.IsAlreadyExists(err), err
	})
	for _, b := range []client.ObjectKey{{Name: "widgets.example.com-customresourcedefinition"}, {Namespace: "web", Name: "gizmo-widget.example.com"}} {
		waitFor(t, 2*time.Minute, "refused in the push member, with the remedy: "+b.Name, func() (bool, error) {
			var status workv1.BindingStatus
			if b.Namespace == "" {
				crb := &workv1.ClusterResourceBinding{}
				if err := fc.Get(ctx, b, crb); err != nil {
					return false, err
				}
				status = crb.Status
			} else {
				rb := &workv1.ResourceBinding{}
				if err := fc.Get(ctx, b, rb); err != nil {
					return false, err
				}
				status = rb.Status
			}
			for _, it := range status.AggregatedStatus {
				if it.ClusterName == us.Name && !it.Applied && strings.Contains(it.AppliedMessage, "join it again") {
					return true, nil
				}
			}
			return false, fmt.Errorf("status %+v", status.AggregatedStatus)
		})
	}

	// The push member leaves: its copies (the CRD too) and the fleet's
	// identity go.
	mustCLI(t, "fleet", "unjoin", fleet, us.Name)
	usClient := memberClient(t, us.Name)
	identity := access.Name("default", fleet, us.Name)
	waitFor(t, time.Minute, "the fleet's identity gone from the member", func() (bool, error) {
		errRole := usClient.Get(ctx, client.ObjectKey{Name: identity}, &rbacv1.ClusterRole{})
		errBinding := usClient.Get(ctx, client.ObjectKey{Name: identity}, &rbacv1.ClusterRoleBinding{})
		errSA := usClient.Get(ctx, client.ObjectKey{Namespace: access.Namespace, Name: identity}, &corev1.ServiceAccount{})
		errToken := usClient.Get(ctx, client.ObjectKey{Namespace: access.Namespace, Name: identity + "-token"}, &corev1.Secret{})
		return apierrors.IsNotFound(errRole) && apierrors.IsNotFound(errBinding) && apierrors.IsNotFound(errSA) && apierrors.IsNotFound(errToken),
			fmt.Errorf("role: %v, binding: %v, service account: %v, token: %v", errRole, errBinding, errSA, errToken)
	})
	waitFor(t, time.Minute, "the fleet's copies gone from the member", func() (bool, error) {
		err := usClient.Get(ctx, client.ObjectKey{Namespace: "web", Name: "front"}, &corev1.Service{})
		return apierrors.IsNotFound(err), err
	})

	// Joining again gives the identity the fleet's CRD and its kind: both
	// arrive. Leaving takes the Widget and the CRD along.
	waitFor(t, time.Minute, "the member object and its kubeconfig Secret gone", func() (bool, error) {
		err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: us.Name}, &lotsev1.FleetMember{})
		if !apierrors.IsNotFound(err) {
			return false, err
		}
		err = mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: "fleet-member-" + us.Name}, &corev1.Secret{})
		return apierrors.IsNotFound(err), err
	})
	mustCLI(t, "fleet", "join", fleet, "--kubeconfig-file", usAdmin, "--as", us.Name, "--region", "us")
	waitFor(t, 2*time.Minute, "the CRD and the Widget in the member that joined again", func() (bool, error) {
		if err := usClient.Get(ctx, client.ObjectKey{Name: "widgets.example.com"}, widgetsCRD()); err != nil {
			return false, err
		}
		w := widgetIn("", "")
		if err := usClient.Get(ctx, client.ObjectKey{Namespace: "web", Name: "gizmo"}, w); err != nil {
			return false, err
		}
		return w.GetLabels()[lotsev1.LabelFleet] == fleet, fmt.Errorf("labels %v", w.GetLabels())
	})
	mustCLI(t, "fleet", "unjoin", fleet, us.Name)
	waitFor(t, time.Minute, "the Widget and its CRD gone from the member", func() (bool, error) {
		err := usClient.Get(ctx, client.ObjectKey{Name: "widgets.example.com"}, widgetsCRD())
		return apierrors.IsNotFound(err), err
	})
}

// pushIdentity: the member joined with an admin kubeconfig holds only the
// fleet's token, which may manage workloads but neither exec into pods
// nor grant rights.
func pushIdentity(t *testing.T, mc client.Client, admin, fleet, member string) {
	ctx := context.Background()
	s := &corev1.Secret{}
	if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: "fleet-member-" + member}, s); err != nil {
		t.Fatal(err)
	}
	stored, err := clientcmd.Load(s.Data["kubeconfig"])
	if err != nil {
		t.Fatal(err)
	}
	given, err := os.ReadFile(admin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(given, s.Data["kubeconfig"]) || len(stored.AuthInfos) != 1 {
		t.Fatalf("the stored kubeconfig is the given one, or has %d users", len(stored.AuthInfos))
	}
	for _, u := range stored.AuthInfos {
		if u.Token == "" || len(u.ClientCertificateData) > 0 || len(u.ClientKeyData) > 0 {
			t.Errorf("the stored credentials are not the fleet's token")
		}
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(s.Data["kubeconfig"])
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	for _, tc := range []struct {
		attrs authorizationv1.ResourceAttributes
		want  bool
	}{
		{authorizationv1.ResourceAttributes{Verb: "create", Group: "apps", Resource: "deployments", Namespace: "web"}, true},
		{authorizationv1.ResourceAttributes{Verb: "delete", Resource: "namespaces"}, true},
		{authorizationv1.ResourceAttributes{Verb: "create", Resource: "pods", Subresource: "exec", Namespace: "kube-system"}, false},
		{authorizationv1.ResourceAttributes{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"}, false},
		{authorizationv1.ResourceAttributes{Verb: "delete", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "cluster-admin"}, false},
		{authorizationv1.ResourceAttributes{Verb: "update", Resource: "nodes"}, false},
		// CRDs: created, but only the fleet's at join time changed (none here).
		{authorizationv1.ResourceAttributes{Verb: "create", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}, true},
		{authorizationv1.ResourceAttributes{Verb: "patch", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions", Name: "anything.example.com"}, false},
		{authorizationv1.ResourceAttributes{Verb: "create", Group: "admissionregistration.k8s.io", Resource: "validatingwebhookconfigurations"}, false},
	} {
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &tc.attrs}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != tc.want {
			t.Errorf("the fleet's identity may %s %s/%s %s: %v, want %v", tc.attrs.Verb, tc.attrs.Resource, tc.attrs.Subresource, tc.attrs.Name, r.Status.Allowed, tc.want)
		}
	}
}

// capacityDivision: members report their room; a Deployment divided by
// available replicas goes where there is room (the member with a node),
// not to the workerless member.
func capacityDivision(t *testing.T, mc, fc client.Client, withNode, workerless string) {
	ctx := context.Background()
	waitFor(t, 2*time.Minute, "the members' resource summaries", func() (bool, error) {
		a, b := &lotsev1.FleetMember{}, &lotsev1.FleetMember{}
		if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: withNode}, a); err != nil {
			return false, err
		}
		if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: workerless}, b); err != nil {
			return false, err
		}
		ra, rb := a.Status.ResourceSummary, b.Status.ResourceSummary
		if ra == nil || rb == nil {
			return false, fmt.Errorf("summaries %+v, %+v", ra, rb)
		}
		cpu, pods, used, slots := ra.Allocatable[corev1.ResourceCPU], ra.Allocatable[corev1.ResourcePods], ra.Allocated[corev1.ResourcePods], rb.Allocatable[corev1.ResourcePods]
		return cpu.Sign() > 0 && pods.Value() > 0 && used.Value() > 0 && slots.Value() == 0,
			fmt.Errorf("%s: %v allocated %v; %s: %v", withNode, ra.Allocatable, ra.Allocated, workerless, rb.Allocatable)
	})
	labels := map[string]string{"app": "batch"}
	if err := fc.Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "batch"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](4), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "batch", Image: "registry.invalid/batch:1",
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}}}}}}}}); err != nil {
		t.Fatal(err)
	}
	if err := fc.Create(ctx, &policyv1.PropagationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "batch"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "apps/v1", Kind: "Deployment", Name: "batch"}},
		Placement: policyv1.Placement{ReplicaScheduling: &policyv1.ReplicaSchedulingStrategy{
			ReplicaSchedulingType: policyv1.ReplicaSchedulingDivided, ReplicaDivisionPreference: policyv1.DivisionWeighted,
			WeightPreference: &policyv1.ClusterPreferences{DynamicWeight: policyv1.DynamicWeightAvailableReplicas}}}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "batch divided by room: all 4 on the member with a node", func() (bool, error) {
		b := &workv1.ResourceBinding{}
		if err := fc.Get(ctx, client.ObjectKey{Namespace: "web", Name: "batch-deployment"}, b); err != nil {
			return false, err
		}
		return len(b.Spec.Clusters) == 1 && b.Spec.Clusters[0].Name == withNode && b.Spec.Clusters[0].Replicas == 4,
			fmt.Errorf("targets %+v", b.Spec.Clusters)
	})
}
