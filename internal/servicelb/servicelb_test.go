package servicelb

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	ok := Listener{Name: "http", Protocol: TCP, Port: 80, Backends: []string{"10.0.0.2:30080"}}
	tests := []struct {
		name    string
		change  func(*Spec)
		wantErr string
	}{
		{"valid", func(*Spec) {}, ""},
		{"bad address", func(s *Spec) { s.Address = "lb" }, `address "lb"`},
		{"bad protocol", func(s *Spec) { s.Listeners[0].Protocol = "SCTP" }, `protocol "SCTP"`},
		{"port out of range", func(s *Spec) { s.Listeners[0].Port = 70000 }, "port 70000"},
		{"same port twice", func(s *Spec) { s.Listeners = append(s.Listeners, ok) }, "TCP/80 twice"},
		{"PROXY on UDP", func(s *Spec) { s.Listeners[0].Protocol, s.Listeners[0].ProxyProtocol = UDP, 2 }, "TCP only"},
		{"PROXY v3", func(s *Spec) { s.Listeners[0].ProxyProtocol = 3 }, "PROXY protocol v3"},
		{"unknown algorithm", func(s *Spec) { s.Listeners[0].Algorithm = "random" }, `algorithm "random"`},
		{"bad CIDR", func(s *Spec) { s.Listeners[0].AllowedCIDRs = []string{"10.0.0.0"} }, `allowed CIDR "10.0.0.0"`},
		{"bad backend", func(s *Spec) { s.Listeners[0].Backends = []string{"node-1"} }, `backend "node-1"`},
		{"bad health check", func(s *Spec) { s.Listeners[0].Health.Type = "grpc" }, `health check type "grpc"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Spec{Address: "127.0.0.1", Listeners: []Listener{ok}}
			tt.change(&s)
			err := s.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// freePort returns a port nothing listens on right now.
func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// tcpBackend answers each connection with its name, then whatever the
// connection sent first (the PROXY header, when there is one), line by line.
func tcpBackend(t *testing.T, name string) (string, func()) {
	t.Helper()
	return tcpBackendNotify(t, name, nil)
}

// tcpBackendNotify is tcpBackend that also sends on accepted (without
// blocking) for every connection that sends it bytes: the evidence that a
// proxied client connection has reached it (health checks send nothing).
func tcpBackendNotify(t *testing.T, name string, accepted chan<- struct{}) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				first := make([]byte, 256)
				n, _ := c.Read(first)
				if n > 0 {
					select {
					case accepted <- struct{}{}:
					default:
					}
				}
				fmt.Fprintf(c, "%s\n%q\n", name, first[:n])
			}(c)
		}
	}()
	return ln.Addr().String(), func() { ln.Close() }
}

func startBalancer(t *testing.T, spec Spec) *Balancer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := New(nil)
	if err := b.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(); cancel() })
	return b
}

func ask(t *testing.T, addr string) (string, string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		return "", "", err
	}
	first, _ := r.ReadString('\n')
	return strings.TrimSpace(name), strings.TrimSpace(first), nil
}

func TestTCPBalancing(t *testing.T) {
	a, stopA := tcpBackend(t, "a")
	bAddr, stopB := tcpBackend(t, "b")
	defer stopB()
	port := freePort(t, "tcp")
	lb := startBalancer(t, Spec{Address: "127.0.0.1", Listeners: []Listener{{Name: "http", Protocol: TCP, Port: port,
		Backends: []string{a, bAddr}, Health: HealthCheck{Interval: 50 * time.Millisecond, DownThreshold: 1}}}})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		name, _, err := ask(t, addr)
		if err != nil {
			t.Fatal(err)
		}
		seen[name]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Errorf("round robin: %v", seen)
	}

	stopA() // a goes away: after a failed check, only b answers
	deadline := time.Now().Add(5 * time.Second)
	for len(lb.Healthy()[fmt.Sprintf("TCP/%d", port)]) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("healthy backends %v", lb.Healthy())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := 0; i < 4; i++ {
		if name, _, err := ask(t, addr); err != nil || name != "b" {
			t.Errorf("after a died: %q %v", name, err)
		}
	}
}

// TestConnectRetry: a node port that refuses for a moment (its kube-proxy
// still sends a share of connections to a pod that stopped listening)
// costs the client nothing: the balancer tries again after a pause.
func TestConnectRetry(t *testing.T) {
	backendPort := freePort(t, "tcp")
	backendAddr := fmt.Sprintf("127.0.0.1:%d", backendPort)
	port := freePort(t, "tcp")
	startBalancer(t, Spec{Address: "127.0.0.1", Listeners: []Listener{{Name: "api", Protocol: TCP, Port: port,
		Backends: []string{backendAddr}, Health: HealthCheck{Interval: time.Hour}}}})

	listening := make(chan func(), 1)
	time.AfterFunc(100*time.Millisecond, func() {
		ln, err := net.Listen("tcp", backendAddr)
		if err != nil {
			listening <- nil
			return
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "late\n\n")
				c.Close()
			}
		}()
		listening <- func() { ln.Close() }
	})
	name, _, err := ask(t, fmt.Sprintf("127.0.0.1:%d", port))
	stop := <-listening
	if stop == nil {
		t.Fatal("the backend's port was taken meanwhile")
	}
	defer stop()
	if err != nil || name != "late" {
		t.Errorf("a client arriving while its only backend refused: %q, %v; want the backend's answer after a retry", name, err)
	}
}

func TestAllowedSourceRanges(t *testing.T) {
	a, stop := tcpBackend(t, "a")
	defer stop()
	port := freePort(t, "tcp")
	lb := startBalancer(t, Spec{Address: "127.0.0.1", Listeners: []Listener{{Name: "http", Protocol: TCP, Port: port,
		Backends: []string{a}, AllowedCIDRs: []string{"192.0.2.0/24"}}}})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if name, _, err := ask(t, addr); err == nil {
		t.Fatalf("a client outside the allowed ranges got %q", name)
	}
	// The same listener, its ranges changed in place.
	if err := lb.Apply(context.Background(), Spec{Address: "127.0.0.1", Listeners: []Listener{{Name: "http", Protocol: TCP, Port: port,
		Backends: []string{a}, AllowedCIDRs: []string{"192.0.2.0/24", "127.0.0.0/8"}}}}); err != nil {
		t.Fatal(err)
	}
	if name, _, err := ask(t, addr); err != nil || name != "a" {
		t.Errorf("an allowed client: %q %v", name, err)
	}
}

func TestProxyProtocol(t *testing.T) {
	a, stop := tcpBackend(t, "a")
	defer stop()
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			port := freePort(t, "tcp")
			startBalancer(t, Spec{Address: "127.0.0.1", Listeners: []Listener{{Name: "http", Protocol: TCP, Port: port,
				Backends: []string{a}, ProxyProtocol: version}}})
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			r := bufio.NewReader(c)
			if _, err := r.ReadString('\n'); err != nil {
				t.Fatal(err)
			}
			quoted, _ := r.ReadString('\n')
			var header string
			if _, err := fmt.Sscanf(strings.TrimSpace(quoted), "%q", &header); err != nil {
				t.Fatalf("backend saw %s: %v", quoted, err)
			}
			client := c.LocalAddr().(*net.TCPAddr)
			switch version {
			case 1:
				want := fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n", client.Port, port)
				if header != want {
					t.Errorf("v1 header %q, want %q", header, want)
				}
			case 2:
				h := []byte(header)
				if len(h) != 28 || !bytes.Equal(h[:12], proxyV2Signature) || h[12] != 0x21 || h[13] != 0x11 ||
					int(binary.BigEndian.Uint16(h[24:26])) != client.Port || int(binary.BigEndian.Uint16(h[26:28])) != port ||
					!net.IP(h[16:20]).Equal(client.IP) {
					t.Errorf("v2 header % x (client %s)", h, client)
				}
			}
		})
	}
}

func TestUDP(t *testing.T) {
	backend, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := backend.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = backend.WriteTo(append([]byte("echo: "), buf[:n]...), from)
		}
	}()
	port := freePort(t, "udp")
	startBalancer(t, Spec{Address: "127.0.0.1", Listeners: []Listener{{Name: "dns", Protocol: UDP, Port: port,
		Backends: []string{backend.LocalAddr().String()}}}})
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := fmt.Fprintf(c, "ping %d", i); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != fmt.Sprintf("echo: ping %d", i) {
			t.Fatalf("reply %q, %v", buf[:n], err)
		}
	}
}

func TestApplyInPlace(t *testing.T) {
	reachedA := make(chan struct{}, 1)
	a, stopA := tcpBackendNotify(t, "a", reachedA)
	defer stopA()
	b, stopB := tcpBackend(t, "b")
	defer stopB()
	p1, p2 := freePort(t, "tcp"), freePort(t, "tcp")
	lb := startBalancer(t, Spec{Address: "127.0.0.1", Listeners: []Listener{{Name: "one", Protocol: TCP, Port: p1, Backends: []string{a}}}})

	// A connection that stays open across the change.
	held, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p1))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := held.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	// The balancer accepts and dials the backend after the client's dial
	// returns; the change must come after the held connection reached a.
	select {
	case <-reachedA:
	case <-time.After(5 * time.Second):
		t.Fatal("the held connection never reached backend a")
	}
	if err := lb.Apply(context.Background(), Spec{Address: "127.0.0.1", Listeners: []Listener{
		{Name: "one", Protocol: TCP, Port: p1, Backends: []string{b}},
		{Name: "two", Protocol: TCP, Port: p2, Backends: []string{a}},
	}}); err != nil {
		t.Fatal(err)
	}
	_ = held.SetDeadline(time.Now().Add(2 * time.Second))
	if line, err := bufio.NewReader(held).ReadString('\n'); err != nil || strings.TrimSpace(line) != "a" {
		t.Errorf("the held connection: %q %v", line, err)
	}
	if name, _, err := ask(t, fmt.Sprintf("127.0.0.1:%d", p1)); err != nil || name != "b" {
		t.Errorf("listener one after the change: %q %v", name, err)
	}
	if name, _, err := ask(t, fmt.Sprintf("127.0.0.1:%d", p2)); err != nil || name != "a" {
		t.Errorf("the new listener two: %q %v", name, err)
	}

	if err := lb.Apply(context.Background(), Spec{Address: "127.0.0.1", Listeners: []Listener{{Name: "two", Protocol: TCP, Port: p2, Backends: []string{a}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p1), time.Second); err == nil {
		t.Error("the removed listener still accepts")
	}
}

func TestHealthCheck(t *testing.T) {
	healthy := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || !healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	var p int
	fmt.Sscan(port, &p)
	backend := net.JoinHostPort(host, "1") // the traffic port; the check goes to the health port
	tests := []struct {
		name    string
		h       HealthCheck
		healthy bool
		want    bool
	}{
		{"http 200", HealthCheck{Type: "http", Port: p, Path: "/healthz", Timeout: time.Second}, true, true},
		{"http 503", HealthCheck{Type: "http", Port: p, Path: "/healthz", Timeout: time.Second}, false, false},
		{"tcp to the health port", HealthCheck{Type: "tcp", Port: p, Timeout: time.Second}, true, true},
		{"tcp to a closed port", HealthCheck{Type: "tcp", Timeout: time.Second}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			healthy = tt.healthy
			if got := check(context.Background(), tt.h, backend); got != tt.want {
				t.Errorf("check = %t, want %t", got, tt.want)
			}
		})
	}
}
