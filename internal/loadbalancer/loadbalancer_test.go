package loadbalancer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echoBackend is a TCP server that greets every connection with its name
// and then echoes what it receives.
type echoBackend struct {
	name string
	ln   net.Listener
	wg   sync.WaitGroup
}

func startEcho(t *testing.T, name string) *echoBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &echoBackend{name: name, ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(c, b.name+"\n"); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(b.close)
	return b
}

func (b *echoBackend) addr() string { return b.ln.Addr().String() }

func (b *echoBackend) close() { b.ln.Close() }

// serve runs lb on a fresh listener until the test ends and returns its address.
func serve(t *testing.T, lb *LoadBalancer, ln net.Listener) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lb.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v after cancel, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return ln.Addr().String()
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// exchange connects through the load balancer, reads the backend's name
// and checks that data flows both ways.
func exchange(addr, payload string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, payload+"\n"); err != nil {
		return "", err
	}
	echo, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if echo != payload+"\n" {
		return "", errors.New("echo mismatch: " + echo)
	}
	return strings.TrimSuffix(name, "\n"), nil
}

func TestNewValidates(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, []byte("not pem but readable"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"empty", Config{}, true},
		{"no backends", Config{Listen: "127.0.0.1:0"}, true},
		{"empty backend list", Config{Listen: "127.0.0.1:0", Backends: []string{}}, true},
		{"no listen", Config{Backends: []string{"127.0.0.1:1"}}, true},
		{"missing CA file", Config{Listen: "127.0.0.1:0", Backends: []string{"127.0.0.1:1"}, HealthPath: "/readyz", CAFile: filepath.Join(dir, "nope")}, true},
		{"tcp checks", Config{Listen: "127.0.0.1:0", Backends: []string{"127.0.0.1:1"}}, false},
		{"https checks", Config{Listen: "127.0.0.1:0", Backends: []string{"127.0.0.1:1", "127.0.0.1:2"}, HealthPath: "/readyz", CAFile: ca}, false},
		// The CA file only matters for HTTPS health checks.
		{"CA file ignored without health path", Config{Listen: "127.0.0.1:0", Backends: []string{"127.0.0.1:1"}, CAFile: filepath.Join(dir, "nope")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lb, err := New(tt.cfg)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("New(%v) succeeded", tt.cfg)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%v): %v", tt.cfg, err)
			}
			if lb == nil {
				t.Fatal("New returned nil without an error")
			}
			if got := lb.cfg.Interval; got != time.Second {
				t.Errorf("default interval %s, want 1s", got)
			}
			if (lb.client != nil) != (tt.cfg.HealthPath != "") {
				t.Errorf("HTTPS health client present = %t, want %t", lb.client != nil, tt.cfg.HealthPath != "")
			}
		})
	}
}

func TestSpreadsConnections(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	ln := listen(t)
	// One check, at the start, with all the time it needs: a check that
	// timed out on a busy machine would skew the count.
	lb, err := New(Config{Listen: ln.Addr().String(), Backends: []string{a.addr(), b.addr()}, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, lb, ln)
	counts := map[string]int{}
	const n = 20
	for i := 0; i < n; i++ {
		name, err := exchange(addr, "ping")
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		counts[name]++
	}
	// Round robin over two healthy backends.
	if counts["a"] != n/2 || counts["b"] != n/2 {
		t.Errorf("connections per backend %v, want %d each", counts, n/2)
	}
}

func TestConcurrentConnections(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	ln := listen(t)
	lb, err := New(Config{Listen: ln.Addr().String(), Backends: []string{a.addr(), b.addr()}})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, lb, ln)
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name, err := exchange(addr, strings.Repeat("x", 8<<10))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("connection: %v", err)
				return
			}
			counts[name]++
		}()
	}
	wg.Wait()
	if counts["a"] == 0 || counts["b"] == 0 || counts["a"]+counts["b"] != 16 {
		t.Errorf("connections per backend %v, want both used, 16 in all", counts)
	}
}

func TestFailsOverToLiveBackend(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	ln := listen(t)
	// A long interval: the health state still says b is fine when it dies,
	// so the connection attempt itself must fail over.
	lb, err := New(Config{Listen: ln.Addr().String(), Backends: []string{a.addr(), b.addr()}, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, lb, ln)
	if _, err := exchange(addr, "warm"); err != nil {
		t.Fatal(err)
	}
	b.close()
	for i := 0; i < 10; i++ {
		name, err := exchange(addr, "ping")
		if err != nil {
			t.Fatalf("connection %d after closing b: %v", i, err)
		}
		if name != "a" {
			t.Fatalf("connection %d went to %q, want a", i, name)
		}
	}
}

func TestHealthCheckRemovesDeadBackend(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	ln := listen(t)
	logs := &syncBuffer{}
	lb, err := New(Config{Listen: ln.Addr().String(), Backends: []string{a.addr(), b.addr()}, Interval: 50 * time.Millisecond, Log: log.New(logs, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, lb, ln)
	if _, err := exchange(addr, "warm"); err != nil {
		t.Fatal(err)
	}
	b.close()
	want := "backend " + b.addr() + " healthy=false"
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("health check never marked b unhealthy; log:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !lb.healthy[0].Load() || lb.healthy[1].Load() {
		t.Errorf("healthy = [%t %t], want [true false]", lb.healthy[0].Load(), lb.healthy[1].Load())
	}
	// Only a is picked first from now on.
	for i := 0; i < 4; i++ {
		if got := lb.pick(); len(got) != 2 || lb.cfg.Backends[got[0]] != a.addr() {
			t.Errorf("pick() = %v, want %s first", got, a.addr())
		}
	}
}

func TestNoBackendReachable(t *testing.T) {
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	ln := listen(t)
	logs := &syncBuffer{}
	lb, err := New(Config{Listen: ln.Addr().String(), Backends: []string{deadAddr}, Log: log.New(logs, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, lb, ln)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read from a connection without backend = %d, %v; want EOF", n, err)
	}
	if !strings.Contains(logs.String(), "no backend reachable") {
		t.Errorf("log does not report the failure:\n%s", logs)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// tlsBackend is an HTTPS server that reports its name and a fixed /readyz status.
func tlsBackend(t *testing.T, name string, readyz int) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(readyz)
			return
		}
		io.WriteString(w, name)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func writeCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.crt")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestHTTPSHealthCheck(t *testing.T) {
	healthy := tlsBackend(t, "healthy", http.StatusOK)
	sick := tlsBackend(t, "sick", http.StatusInternalServerError)
	host := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "https://") }

	tests := []struct {
		name     string
		backends []*httptest.Server
		caFile   string
		// serverName is Config.ServerName (httptest's certificate names
		// example.com and 127.0.0.1).
		serverName string
		want       map[string]int // per 20 requests
	}{
		{"sick first", []*httptest.Server{sick, healthy}, writeCA(t, healthy), "", map[string]int{"healthy": 20}},
		{"healthy first", []*httptest.Server{healthy, sick}, writeCA(t, healthy), "", map[string]int{"healthy": 20}},
		// Without the CA no check passes; the load balancer then tries every
		// backend rather than none.
		{"unverifiable", []*httptest.Server{sick, healthy}, "", "", map[string]int{"healthy": 10, "sick": 10}},
		// A server name the certificate has verifies whatever the address.
		{"server name", []*httptest.Server{sick, healthy}, writeCA(t, healthy), "example.com", map[string]int{"healthy": 20}},
		// One it does not have fails every check, as without the CA.
		{"wrong server name", []*httptest.Server{sick, healthy}, writeCA(t, healthy), "other.invalid", map[string]int{"healthy": 10, "sick": 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var backends []string
			for _, s := range tt.backends {
				backends = append(backends, host(s))
			}
			ln := listen(t)
			logs := &syncBuffer{}
			lb, err := New(Config{Listen: ln.Addr().String(), Backends: backends, HealthPath: "/readyz", CAFile: tt.caFile, ServerName: tt.serverName, Interval: time.Second, Log: log.New(logs, "", 0)})
			if err != nil {
				t.Fatal(err)
			}
			addr := serve(t, lb, ln)

			// TLS passes through: the client verifies the backend itself.
			tr := healthy.Client().Transport.(*http.Transport).Clone()
			tr.DisableKeepAlives = true
			tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			}
			tr.TLSClientConfig.ServerName = "127.0.0.1"
			client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			defer tr.CloseIdleConnections()

			got := map[string]int{}
			for i := 0; i < 20; i++ {
				resp, err := client.Get("https://lb.invalid/")
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got[string(body)]++
			}
			if len(got) != len(tt.want) {
				t.Errorf("requests per backend %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("requests per backend %v, want %v", got, tt.want)
					break
				}
			}
			verifiable := tt.caFile != "" && tt.want["sick"] == 0
			if verifiable && !strings.Contains(logs.String(), "backend "+host(healthy)+" healthy=true") {
				t.Errorf("log does not show the healthy backend:\n%s", logs)
			}
			if strings.Contains(logs.String(), "backend "+host(sick)+" healthy=true") {
				t.Errorf("sick backend reported healthy:\n%s", logs)
			}
		})
	}
}

func TestConfigString(t *testing.T) {
	c := Config{Listen: "127.0.0.1:6443", Backends: []string{"127.0.0.1:1", "127.0.0.1:2"}, HealthPath: "/readyz"}
	want := `listen=127.0.0.1:6443 backends=[127.0.0.1:1 127.0.0.1:2] health="/readyz"`
	if got := c.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestHealthCheckReloadsCA: a CA file that changes under a running load
// balancer (a CA rotation) is used from the next check on.
func TestHealthCheckReloadsCA(t *testing.T) {
	healthy := tlsBackend(t, "healthy", http.StatusOK)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, []byte("no certificate yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	logs := &syncBuffer{}
	backend := strings.TrimPrefix(healthy.URL, "https://")
	lb, err := New(Config{Listen: ln.Addr().String(), Backends: []string{backend}, HealthPath: "/readyz", CAFile: caFile, Interval: 100 * time.Millisecond, Log: log.New(logs, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, lb, ln)
	time.Sleep(300 * time.Millisecond)
	if strings.Contains(logs.String(), "healthy=true") {
		t.Fatalf("healthy without a CA that verifies it:\n%s", logs)
	}
	data, _ := os.ReadFile(writeCA(t, healthy))
	if err := os.WriteFile(caFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "backend "+backend+" healthy=true") {
		if time.Now().After(deadline) {
			t.Fatalf("the new CA was not used:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startClientFirst is a backend for protocols where the client speaks
// first, as in TLS: it reads a line and then acts.
func startClientFirst(t *testing.T, act func(c net.Conn, line string)) string {
	t.Helper()
	ln := listen(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				act(c, strings.TrimSuffix(line, "\n"))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// request says a line through addr and reads the whole answer.
func request(addr, line string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestReplaysUnansweredConnections: a backend that closes or resets a
// TLS client's connection before it answered a byte (an API server killed
// with the connection in its listen queue, or during the handshake) costs
// the client nothing: the next backend gets the same bytes. Once a backend
// has answered, its connection's end is the client's; a plain-text
// client's bytes are never replayed (the backend may have acted on them).
func TestReplaysUnansweredConnections(t *testing.T) {
	const hello = "\x16hello" // the first byte of a TLS handshake record
	good := func(c net.Conn, line string) { _, _ = io.WriteString(c, "good:"+line) }
	reset := func(c net.Conn, _ string) {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	closeQuietly := func(net.Conn, string) {}
	answerThenDie := func(c net.Conn, _ string) { _, _ = io.WriteString(c, "partial") }
	tests := []struct {
		name    string
		first   func(net.Conn, string)
		payload string
		// fromFirst is what a client whose connection stays with the
		// first backend reads; "" when none does.
		fromFirst string
		moved     bool
	}{
		{"reset before answering", reset, hello, "", true},
		{"closed before answering", closeQuietly, hello, "", true},
		{"closed after answering", answerThenDie, hello, "partial", false},
		{"plain text is not replayed", closeQuietly, "hello", "(closed)", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, second := startClientFirst(t, tt.first), startClientFirst(t, good)
			ln := listen(t)
			logs := &syncBuffer{}
			// Health checks too rare to notice anything: only the
			// connection itself can tell.
			lb, err := New(Config{Listen: ln.Addr().String(), Backends: []string{first, second}, Interval: time.Hour, Log: log.New(logs, "", 0)})
			if err != nil {
				t.Fatal(err)
			}
			addr := serve(t, lb, ln)
			fromFirst := 0
			for i := 0; i < 6; i++ {
				got, err := request(addr, tt.payload)
				if got == "" && err == nil {
					got = "(closed)"
				}
				switch {
				case got == "good:"+tt.payload:
				case tt.fromFirst != "" && got == tt.fromFirst:
					fromFirst++
				default:
					t.Fatalf("connection %d got %q, %v; want %q (log: %s)", i, got, err, "good:"+tt.payload, logs)
				}
			}
			if tt.fromFirst != "" && fromFirst == 0 {
				t.Errorf("no connection stayed with the first backend (want %q from it)", tt.fromFirst)
			}
			moved := strings.Contains(logs.String(), "before answering; sent to "+second)
			if moved != tt.moved {
				t.Errorf("connections moved: %t, want %t (log: %s)", moved, tt.moved, logs)
			}
		})
	}
}

// TestShutdownWithUnansweredConnection: a connection whose backend never
// answers does not hold up the balancer's shutdown.
func TestShutdownWithUnansweredConnection(t *testing.T) {
	silent := startClientFirst(t, func(c net.Conn, _ string) { _, _ = io.Copy(io.Discard, c) })
	ln := listen(t)
	lb, err := New(Config{Listen: ln.Addr().String(), Backends: []string{silent}, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lb.Serve(ctx, ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "\x16hello\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return with a connection waiting for its backend's answer")
	}
}

// TestHealthChecksKeepTheirConnection: HTTPS health checks reuse one
// connection per backend instead of a TLS handshake each, and a backend
// that goes away still fails its next check.
func TestHealthChecksKeepTheirConnection(t *testing.T) {
	var conns, checks atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		checks.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "https://")
	ln := listen(t)
	lb, err := New(Config{Listen: ln.Addr().String(), Backends: []string{addr}, HealthPath: "/readyz", CAFile: writeCA(t, srv), Interval: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, lb, ln)
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitUntil("ten checks", func() bool { return checks.Load() >= 10 })
	// One kept; a check that timed out on a busy machine starts another.
	if n := conns.Load(); n > 4 {
		t.Errorf("%d connections for %d checks, want one kept", n, checks.Load())
	}
	if !lb.healthy[0].Load() {
		t.Error("the backend is not healthy")
	}
	srv.CloseClientConnections()
	srv.Listener.Close()
	waitUntil("the closed backend unhealthy", func() bool { return !lb.healthy[0].Load() })
}
