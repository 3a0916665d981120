// Package dns is the fleets' authoritative DNS server. Each fleet has a
// zone (e.g. "shop.fleet.example."); in it, SVC.NS.svc.ZONE answers with
// the addresses of every healthy member that serves the Service NS/SVC
// (its load-balancer addresses, or its nodes' addresses for a NodePort),
// and SVC.NS.svc.REGION.ZONE only with those of the members in REGION.
// The zone's apex answers SOA and NS. Answers follow member health within
// the zone's TTL: nothing is cached here, every answer is computed from
// the fleet's current view.
package dns

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Zone is one fleet's zone.
type Zone struct {
	// Name is the zone, fully qualified and lower case ("shop.fleet.example.").
	Name string
	// TTL of the answers, in seconds.
	TTL uint32
	// Lookup returns the addresses serving a Service of the fleet (all
	// members when region is ""); known is false when the fleet has no
	// such Service; an error (the fleet's view is not complete) answers
	// SERVFAIL, which resolvers do not cache as an answer.
	Lookup func(namespace, service, region string) (addrs []net.IP, known bool, err error)
}

// Zones tells the server the zones it is authoritative for.
type Zones interface {
	Zones() []Zone
}

// Server answers DNS queries over UDP and TCP on one address.
type Server struct {
	Zones Zones
	// NSName is the name the zones' NS and SOA records give for this
	// server ("ns.<zone>" when empty).
	NSName string

	mu      sync.Mutex
	servers []*dns.Server
	addr    string
}

// Start listens on addr ("127.0.0.1:0" picks a port) with UDP and TCP and
// serves until ctx ends. It returns once both listeners are up.
func (s *Server) Start(ctx context.Context, addr string) error {
	pc, ln, err := listen(addr)
	if err != nil {
		return err
	}
	handler := dns.HandlerFunc(s.serve)
	udp := &dns.Server{PacketConn: pc, Handler: handler}
	tcp := &dns.Server{Listener: ln, Handler: handler}
	s.mu.Lock()
	s.servers = []*dns.Server{udp, tcp}
	s.addr = pc.LocalAddr().String()
	s.mu.Unlock()
	for _, srv := range s.servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func(srv *dns.Server) { _ = srv.ActivateAndServe() }(srv)
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			for _, srv := range s.servers {
				_ = srv.Shutdown()
			}
			pc.Close()
			ln.Close()
			return fmt.Errorf("the DNS server did not start")
		}
	}
	go func() {
		<-ctx.Done()
		for _, srv := range s.servers {
			_ = srv.Shutdown()
		}
	}()
	return nil
}

// listen opens UDP and TCP on the same port. With port 0 the kernel picks
// the UDP port, which TCP may have in use by someone else: then it tries
// another.
func listen(addr string) (net.PacketConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	attempts := 1
	if port == "0" {
		attempts = 20
	}
	var lastErr error
	for range attempts {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, lastErr
}

// Addr is the address the server listens on (UDP and TCP).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	resp := s.Answer(req)
	resp.Compress = true
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
		resp.Truncate(size) // sets TC when it does not fit: the client asks again over TCP
	}
	_ = w.WriteMsg(resp)
}

// Answer computes the response to a query.
func (s *Server) Answer(req *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	if len(req.Question) != 1 {
		resp.Rcode = dns.RcodeFormatError
		return resp
	}
	q := req.Question[0]
	name := strings.ToLower(dns.Fqdn(q.Name))
	zone, ok := s.zoneOf(name)
	if !ok {
		resp.Authoritative = false
		resp.Rcode = dns.RcodeRefused
		return resp
	}
	soa := s.soa(zone)
	relative := strings.TrimSuffix(strings.TrimSuffix(name, zone.Name), ".")
	if relative == "" { // the apex
		switch q.Qtype {
		case dns.TypeSOA:
			resp.Answer = append(resp.Answer, soa)
		case dns.TypeNS:
			resp.Answer = append(resp.Answer, &dns.NS{Hdr: s.header(zone.Name, dns.TypeNS, zone.TTL), Ns: s.nsName(zone)})
		default:
			resp.Ns = append(resp.Ns, soa)
		}
		return resp
	}
	// SVC.NS.svc[.REGION]
	labels := strings.Split(relative, ".")
	var service, namespace, region string
	switch {
	case len(labels) == 3 && labels[2] == "svc":
		service, namespace = labels[0], labels[1]
	case len(labels) == 4 && labels[2] == "svc":
		service, namespace, region = labels[0], labels[1], labels[3]
	case emptyNonTerminal(labels):
		// svc, NS.svc, REGION, svc.REGION, NS.svc.REGION: names on the
		// way to a Service name exist (RFC 8020), with no records.
		resp.Ns = append(resp.Ns, soa)
		return resp
	default:
		resp.Rcode = dns.RcodeNameError
		resp.Ns = append(resp.Ns, soa)
		return resp
	}
	addrs, known, err := zone.Lookup(namespace, service, region)
	if err != nil {
		resp.Rcode = dns.RcodeServerFailure
		return resp
	}
	if !known {
		resp.Rcode = dns.RcodeNameError
		resp.Ns = append(resp.Ns, soa)
		return resp
	}
	addrs = slices.Clone(addrs) // the lookup's own slice stays as it is
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].String() < addrs[j].String() })
	for _, ip := range addrs {
		switch {
		case ip.To4() != nil && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
			resp.Answer = append(resp.Answer, &dns.A{Hdr: s.header(name, dns.TypeA, zone.TTL), A: ip.To4()})
		case ip.To4() == nil && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
			resp.Answer = append(resp.Answer, &dns.AAAA{Hdr: s.header(name, dns.TypeAAAA, zone.TTL), AAAA: ip})
		}
	}
	if len(resp.Answer) == 0 {
		resp.Ns = append(resp.Ns, soa) // NODATA: the name exists, no such records
	}
	return resp
}

// emptyNonTerminal: labels (from the zone down) that are a proper suffix
// of SVC.NS.svc[.REGION].
func emptyNonTerminal(labels []string) bool {
	switch len(labels) {
	case 1: // svc or REGION
		return true
	case 2: // NS.svc, or svc.REGION
		return labels[1] == "svc" || labels[0] == "svc"
	case 3: // NS.svc.REGION
		return labels[1] == "svc"
	}
	return false
}

func (s *Server) zoneOf(name string) (Zone, bool) {
	var best Zone
	found := false
	// Zones come sorted, so two fleets with the same zone always give the
	// same one (the first by name).
	for _, z := range s.Zones.Zones() {
		zn := strings.ToLower(dns.Fqdn(z.Name))
		if (name == zn || strings.HasSuffix(name, "."+zn)) && (!found || len(zn) > len(best.Name)) {
			z.Name = zn
			best, found = z, true
		}
	}
	return best, found
}

func (s *Server) nsName(z Zone) string {
	if s.NSName != "" {
		return dns.Fqdn(s.NSName)
	}
	return "ns." + z.Name
}

func (s *Server) header(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

func (s *Server) soa(z Zone) *dns.SOA {
	return &dns.SOA{Hdr: s.header(z.Name, dns.TypeSOA, z.TTL), Ns: s.nsName(z), Mbox: "hostmaster." + z.Name,
		// The serial changes every minute: answers are computed, not
		// transferred, so secondaries have nothing to fetch.
		Serial: uint32(time.Now().Unix() / 60), Refresh: 60, Retry: 30, Expire: 3600, Minttl: z.TTL}
}
