package dns

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/miekg/dns"
)

// zonesForTest is a fixed set of zones (a fake of the fleets' view).
type zonesForTest []Zone

func (z zonesForTest) Zones() []Zone { return z }

func testZones() zonesForTest {
	members := map[string][]net.IP{"eu": {net.ParseIP("10.0.0.2"), net.ParseIP("10.0.0.1")}, "us": {net.ParseIP("10.1.0.1"), net.ParseIP("fd00::1")}}
	return zonesForTest{{Name: "Shop.Fleet.Example", TTL: 5, Lookup: func(ns, svc, region string) ([]net.IP, bool, error) {
		if ns == "web" && svc == "broken" {
			return nil, false, fmt.Errorf("no view")
		}
		if ns != "web" || (svc != "front" && svc != "idle") {
			return nil, false, nil
		}
		if svc == "idle" {
			return nil, true, nil
		}
		if region != "" {
			return members[region], true, nil
		}
		return append(append([]net.IP{}, members["eu"]...), members["us"]...), true, nil
	}}}
}

func TestAnswer(t *testing.T) {
	s := &Server{Zones: testZones()}
	for _, tc := range []struct {
		name    string
		qtype   uint16
		rcode   int
		answers []string // record data in order
		soaInNs bool
	}{
		{"front.web.svc.shop.fleet.example.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.1", "10.0.0.2", "10.1.0.1"}, false},
		{"FRONT.web.svc.shop.fleet.example.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.1", "10.0.0.2", "10.1.0.1"}, false},
		{"front.web.svc.eu.shop.fleet.example.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.1", "10.0.0.2"}, false},
		{"front.web.svc.us.shop.fleet.example.", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00::1"}, false},
		{"front.web.svc.asia.shop.fleet.example.", dns.TypeA, dns.RcodeSuccess, nil, true},
		{"idle.web.svc.shop.fleet.example.", dns.TypeA, dns.RcodeSuccess, nil, true},
		{"nothing.web.svc.shop.fleet.example.", dns.TypeA, dns.RcodeNameError, nil, true},
		{"a.b.c.d.e.shop.fleet.example.", dns.TypeA, dns.RcodeNameError, nil, true},
		{"web.svc.shop.fleet.example.", dns.TypeA, dns.RcodeSuccess, nil, true},
		{"svc.shop.fleet.example.", dns.TypeA, dns.RcodeSuccess, nil, true},
		{"svc.eu.shop.fleet.example.", dns.TypeA, dns.RcodeSuccess, nil, true},
		{"web.svc.eu.shop.fleet.example.", dns.TypeA, dns.RcodeSuccess, nil, true},
		{"web.nosvc.eu.shop.fleet.example.", dns.TypeA, dns.RcodeNameError, nil, true},
		{"broken.web.svc.shop.fleet.example.", dns.TypeA, dns.RcodeServerFailure, nil, false},
		{"shop.fleet.example.", dns.TypeSOA, dns.RcodeSuccess, []string{"ns.shop.fleet.example."}, false},
		{"shop.fleet.example.", dns.TypeNS, dns.RcodeSuccess, []string{"ns.shop.fleet.example."}, false},
		{"shop.fleet.example.", dns.TypeA, dns.RcodeSuccess, nil, true},
		{"elsewhere.example.", dns.TypeA, dns.RcodeRefused, nil, false},
	} {
		t.Run(tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			req := new(dns.Msg)
			req.SetQuestion(tc.name, tc.qtype)
			resp := s.Answer(req)
			if resp.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
			}
			var got []string
			for _, rr := range resp.Answer {
				switch r := rr.(type) {
				case *dns.A:
					got = append(got, r.A.String())
				case *dns.AAAA:
					got = append(got, r.AAAA.String())
				case *dns.SOA:
					got = append(got, r.Ns)
				case *dns.NS:
					got = append(got, r.Ns)
				}
				if rr.Header().Ttl != 5 {
					t.Errorf("ttl %d", rr.Header().Ttl)
				}
			}
			if len(got) != len(tc.answers) {
				t.Fatalf("answers %v, want %v", got, tc.answers)
			}
			for i := range got {
				if got[i] != tc.answers[i] {
					t.Errorf("answers %v, want %v", got, tc.answers)
				}
			}
			hasSOA := len(resp.Ns) == 1 && resp.Ns[0].Header().Rrtype == dns.TypeSOA
			if hasSOA != tc.soaInNs {
				t.Errorf("SOA in authority: %v, want %v", hasSOA, tc.soaInNs)
			}
			if tc.rcode != dns.RcodeRefused && !resp.Authoritative {
				t.Error("not authoritative")
			}
		})
	}
}

func TestServeUDPAndTCP(t *testing.T) {
	s := &Server{Zones: testZones()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	for _, network := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: network}
		req := new(dns.Msg)
		req.SetQuestion("front.web.svc.eu.shop.fleet.example.", dns.TypeA)
		resp, _, err := c.Exchange(req, s.Addr())
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		if len(resp.Answer) != 2 {
			t.Errorf("%s: %v", network, resp.Answer)
		}
	}
}
