package e2e

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
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
	var ips []string
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	sort.Strings(ips)
	return resp.Rcode, ips, resp
}

// TestFleetDNS: the fleet's zone answers a propagated LoadBalancer Service
// with the address of each ready member that serves it (here the member
// with a node; the workerless one has none), a region's name only with
// that region's, unknown names with NXDOMAIN, the apex with SOA; a member
// that stops leaves the answers within the probe interval and the TTL.
func TestFleetDNS(t *testing.T) {
	t.Parallel()
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
	for _, c := range []*lotsev1.Cluster{eu, us} {
		if err := mc.Create(ctx, &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: c.Name},
			Spec: lotsev1.FleetMemberSpec{Fleet: fleet, Cluster: c.Name}}); err != nil {
			t.Fatal(err)
		}
	}
	waitClusterReady(t, mc, eu.Name, 15*time.Minute)
	var server string
	waitFor(t, 4*time.Minute, "the fleet Ready with 2 ready members", func() (bool, error) {
		cur := &lotsev1.Fleet{}
		if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, cur); err != nil {
			return false, err
		}
		if cur.Status.DNS != nil {
			server = cur.Status.DNS.Server
		}
		return cur.Status.Phase == lotsev1.FleetReady && cur.Status.ReadyMembers == 2 && server != "",
			fmt.Errorf("phase %s, %d ready, dns %+v", cur.Status.Phase, cur.Status.ReadyMembers, cur.Status.DNS)
	})

	fc := fleetClient(t, mc, fleet)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web"}}))
	must(fc.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "front"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "front"},
		Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}))
	must(fc.Create(ctx, &policyv1.ClusterPropagationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "services"}, Spec: policyv1.PropagationSpec{
		ResourceSelectors: []policyv1.ResourceSelector{{APIVersion: "v1", Kind: "Service"}}}}))

	// The member with a node gives the Service a load-balancer address.
	var lbIP string
	euClient := memberClient(t, eu.Name)
	waitFor(t, 2*time.Minute, "the eu member's load-balancer address", func() (bool, error) {
		svc := &corev1.Service{}
		if err := euClient.Get(ctx, client.ObjectKey{Namespace: "web", Name: "front"}, svc); err != nil {
			return false, err
		}
		if len(svc.Status.LoadBalancer.Ingress) == 0 {
			return false, fmt.Errorf("no ingress yet")
		}
		lbIP = svc.Status.LoadBalancer.Ingress[0].IP
		return net.ParseIP(lbIP) != nil, nil
	})
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
	start := time.Now()
	const queries = 500
	for i := 0; i < queries; i++ {
		dnsQuery(t, server, name, dns.TypeA)
	}
	t.Logf("DNS answer time: %.2f ms on average over %d queries", float64(time.Since(start).Microseconds())/1000/queries, queries)

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
	t.Logf("the stopped member left the answers %.1f s after it hibernated (probe interval 5 s, TTL 2 s)", time.Since(stopped).Seconds())
}
