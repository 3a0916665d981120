package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// BenchmarkFleetDNS measures the fleet's DNS server with two members that
// serve one LoadBalancer Service (a node and an echo pod each): the time
// to answer a query for the fleet's name (1,000 sequential UDP queries,
// p50 and p99, each computed from the members' current state) and for a
// region's name, and the time from one member's API server freezing
// (SIGSTOP: its endpoints still look ready in the fleet's cache) to its
// address leaving the answers (probe interval 5 s, TTL 2 s).
//
//	make build && LOTSE_BINARY=$PWD/bin/lotse LOTSE_E2E_STATE_DIR=/tmp/lotse-bench \
//	  go test -count=1 -timeout 30m -run '^$' -bench FleetDNS -benchtime 1x ./test/e2e/
func BenchmarkFleetDNS(b *testing.B) {
	buildEchoImage(b)
	ctx := context.Background()
	mc := mgmtClient(b)
	const fleet, zone = "bd", "bench.fleet.example"
	members := map[string]string{"bd-eu": "eu", "bd-us": "us"}
	for name, region := range members {
		c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
		c.Spec.Region = region
		c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
		if err := mc.Create(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
	f := &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}}
	f.Spec.DNS = lotsev1.FleetDNS{Zone: zone, TTL: 2}
	if err := mc.Create(ctx, f); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = mc.Delete(ctx, &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fleet}})
		waitFor(b, 4*time.Minute, "the fleet gone", func() (bool, error) {
			err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: fleet}, &lotsev1.Fleet{})
			return apierrors.IsNotFound(err), err
		})
		for name := range members {
			deleteAndWait(b, mc, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
		}
	})
	var names []string
	for name := range members {
		names = append(names, name)
		if err := mc.Create(ctx, &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: lotsev1.FleetMemberSpec{Fleet: fleet, Cluster: name}}); err != nil {
			b.Fatal(err)
		}
	}
	for name := range members {
		waitClusterReady(b, mc, name, 15*time.Minute)
	}
	server := waitFleetDNS(b, mc, fleet, int32(len(members)))
	fc := fleetClient(b, mc, fleet)
	serveFront(b, fc, names...)
	addrs := map[string]string{}
	for _, name := range names {
		addrs[name] = frontAddress(b, name)
	}
	all := strings.Join(slices.Sorted(maps.Values(addrs)), ",")
	name := "front.web.svc." + zone + "."
	waitFor(b, 2*time.Minute, "both members in the answer", func() (bool, error) {
		rcode, ips, _ := dnsQuery(b, server, name, dns.TypeA)
		return rcode == dns.RcodeSuccess && strings.Join(ips, ",") == all, fmt.Errorf("rcode %d, %v; want %s", rcode, ips, all)
	})

	answerTimes := func(qname string, want string, n int) []float64 {
		conn, err := net.Dial("udp", server)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		dc := &dns.Conn{Conn: conn}
		samples := make([]float64, 0, n)
		for i := 0; i < n; i++ {
			req := new(dns.Msg)
			req.SetQuestion(qname, dns.TypeA)
			start := time.Now()
			if err := dc.WriteMsg(req); err != nil {
				b.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			resp, err := dc.ReadMsg()
			if err != nil {
				b.Fatal(err)
			}
			samples = append(samples, float64(time.Since(start).Microseconds())/1000)
			if got := strings.Join(answerIPs(resp), ","); resp.Rcode != dns.RcodeSuccess || got != want {
				b.Fatalf("%s: rcode %d, %s; want %s", qname, resp.Rcode, got, want)
			}
		}
		return samples
	}
	for i := 0; i < b.N; i++ {
		p50, p99, max := percentiles(answerTimes(name, all, 1000))
		b.ReportMetric(p50, "ms-answer-p50")
		b.ReportMetric(p99, "ms-answer-p99")
		b.Logf("%s (2 members): p50 %.2f ms, p99 %.2f ms, max %.2f ms (1,000 queries)", name, p50, p99, max)
		p50, p99, max = percentiles(answerTimes("front.web.svc.eu."+zone+".", addrs["bd-eu"], 1000))
		b.ReportMetric(p50, "ms-region-p50")
		b.ReportMetric(p99, "ms-region-p99")
		b.Logf("the eu region's name: p50 %.2f ms, p99 %.2f ms, max %.2f ms (1,000 queries)", p50, p99, max)
	}

	// bd-us's API stops answering: the probe takes it out of the answers.
	var api int
	for _, p := range clusterProcesses("bd-us") {
		if componentOf(p.Name) == "kube-apiserver" {
			api = p.PID
		}
	}
	if api == 0 {
		b.Fatal("no kube-apiserver process of bd-us")
	}
	if err := syscall.Kill(api, syscall.SIGSTOP); err != nil {
		b.Fatal(err)
	}
	frozen := time.Now()
	b.Cleanup(func() { _ = syscall.Kill(api, syscall.SIGCONT) })
	waitFor(b, time.Minute, "the frozen member out of the answers", func() (bool, error) {
		rcode, ips, _ := dnsQuery(b, server, name, dns.TypeA)
		return rcode == dns.RcodeSuccess && strings.Join(ips, ",") == addrs["bd-eu"], fmt.Errorf("rcode %d, %v", rcode, ips)
	})
	out := time.Since(frozen).Seconds()
	b.ReportMetric(out, "s-member-out")
	b.Logf("a member whose API froze left the answers %.1f s later (probe interval 5 s, TTL 2 s)", out)
	if err := syscall.Kill(api, syscall.SIGCONT); err != nil {
		b.Fatal(err)
	}
	thawed := time.Now()
	waitFor(b, 2*time.Minute, "the member back in the answers", func() (bool, error) {
		rcode, ips, _ := dnsQuery(b, server, name, dns.TypeA)
		return rcode == dns.RcodeSuccess && strings.Join(ips, ",") == all, fmt.Errorf("rcode %d, %v", rcode, ips)
	})
	back := time.Since(thawed).Seconds()
	b.ReportMetric(back, "s-member-back")
	b.Logf("and was back %.1f s after its API answered again", back)
}
