// Package loadbalancer is the small TCP load balancer in front of the API
// servers of a highly available control plane. It passes TLS through
// untouched (clients verify the API server's certificate) and sends new
// connections only to backends whose health check passes.
package loadbalancer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config of a load balancer.
type Config struct {
	Listen   string
	Backends []string
	// HealthPath, when set, is checked over HTTPS on each backend (e.g.
	// /readyz); otherwise a TCP connect is the health check.
	HealthPath string
	// CAFile verifies the backends' certificates during health checks.
	CAFile string
	// ServerName, when set, is the name the backends' certificates are
	// verified for, instead of each backend's address: backends reached
	// through addresses their certificates do not name (a seed's node
	// ports) still verify as the API server they are.
	ServerName string
	Interval   time.Duration
	Log        *log.Logger
}

// LoadBalancer forwards TCP connections round-robin to healthy backends.
type LoadBalancer struct {
	cfg     Config
	healthy []atomic.Bool
	next    atomic.Uint64
	// client and caPEM are only touched by New and checkAll, which the
	// health loop runs one at a time.
	client *http.Client
	caPEM  []byte
}

// New validates cfg and returns a load balancer.
func New(cfg Config) (*LoadBalancer, error) {
	if cfg.Listen == "" || len(cfg.Backends) == 0 {
		return nil, errors.New("loadbalancer: --listen and at least one --backend are required")
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = log.New(io.Discard, "", 0)
	}
	lb := &LoadBalancer{cfg: cfg, healthy: make([]atomic.Bool, len(cfg.Backends))}
	if cfg.HealthPath != "" {
		if err := lb.loadCA(); err != nil {
			return nil, err
		}
	}
	return lb, nil
}

// loadCA (re)builds the health-check client when the CA file changed: a
// rotation of the cluster CA changes the trust bundle under a running
// load balancer, which must not stop trusting the API servers.
func (lb *LoadBalancer) loadCA() error {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: lb.cfg.ServerName}
	if lb.cfg.CAFile != "" {
		caPEM, err := os.ReadFile(lb.cfg.CAFile)
		if err != nil {
			return err
		}
		if lb.client != nil && bytes.Equal(caPEM, lb.caPEM) {
			return nil
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		tlsCfg.RootCAs = pool
		lb.caPEM = caPEM
	} else if lb.client != nil {
		return nil
	}
	// One connection per backend, kept between checks: a TLS handshake
	// every second per backend cost each HA cluster's load balancer and
	// API servers more than the checks themselves. A killed backend
	// breaks the connection and fails its check; a stopping API server
	// fails /readyz first.
	old := lb.client
	lb.client = &http.Client{Timeout: lb.cfg.Interval, Transport: &http.Transport{
		TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 1, IdleConnTimeout: 10 * lb.cfg.Interval,
	}}
	if old != nil {
		old.CloseIdleConnections()
	}
	return nil
}

// Run serves until ctx ends.
func (lb *LoadBalancer) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", lb.cfg.Listen)
	if err != nil {
		return err
	}
	return lb.Serve(ctx, ln)
}

// Serve accepts on ln until ctx ends.
func (lb *LoadBalancer) Serve(ctx context.Context, ln net.Listener) error {
	lb.checkAll(ctx)
	go lb.healthLoop(ctx)
	go func() { <-ctx.Done(); ln.Close() }()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); lb.handle(ctx, conn) }()
	}
}

func (lb *LoadBalancer) healthLoop(ctx context.Context) {
	t := time.NewTicker(lb.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			lb.checkAll(ctx)
		}
	}
}

func (lb *LoadBalancer) checkAll(ctx context.Context) {
	if lb.client != nil {
		if err := lb.loadCA(); err != nil {
			lb.cfg.Log.Printf("reading %s: %v (keeping the CA read before)", lb.cfg.CAFile, err)
		}
	}
	client := lb.client
	var wg sync.WaitGroup
	for i, addr := range lb.cfg.Backends {
		wg.Add(1)
		go func(i int, addr string) {
			defer wg.Done()
			ok := lb.check(ctx, client, addr)
			if was := lb.healthy[i].Swap(ok); was != ok {
				lb.cfg.Log.Printf("backend %s healthy=%t", addr, ok)
			}
		}(i, addr)
	}
	wg.Wait()
}

func (lb *LoadBalancer) check(ctx context.Context, client *http.Client, addr string) bool {
	if client == nil {
		c, err := net.DialTimeout("tcp", addr, lb.cfg.Interval)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+lb.cfg.HealthPath, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	// Read to the end, so that the connection is reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// pick returns the indexes of the backends to try, healthy ones first in
// round-robin order; if none is known healthy, all of them (a check may
// simply be stale).
func (lb *LoadBalancer) pick() []int {
	n := len(lb.cfg.Backends)
	start := int(lb.next.Add(1) % uint64(n))
	var healthy, rest []int
	for k := 0; k < n; k++ {
		i := (start + k) % n
		if lb.healthy[i].Load() {
			healthy = append(healthy, i)
		} else {
			rest = append(rest, i)
		}
	}
	return append(healthy, rest...)
}

func (lb *LoadBalancer) handle(ctx context.Context, client net.Conn) {
	defer client.Close()
	candidates := lb.pick()
	// dialNext connects to the next candidate that accepts.
	dialNext := func() (net.Conn, int) {
		d := net.Dialer{Timeout: 2 * time.Second}
		for len(candidates) > 0 && ctx.Err() == nil {
			i := candidates[0]
			candidates = candidates[1:]
			if c, err := d.DialContext(ctx, "tcp", lb.cfg.Backends[i]); err == nil {
				return c, i
			}
		}
		return nil, -1
	}
	backend, index := dialNext()
	if backend == nil {
		lb.cfg.Log.Printf("no backend reachable for %s", client.RemoteAddr())
		return
	}
	s := &splice{backend: backend, replayable: true}
	defer func() { s.current().Close() }()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		client.Close()
		s.end()
	}()
	go s.clientToBackend(client)

	buf := make([]byte, 16<<10)
	for {
		n, err := s.current().Read(buf)
		if n > 0 {
			s.answered()
			if _, err := client.Write(buf[:n]); err != nil {
				return
			}
			// When either side ends, end both: a half-open connection to
			// a dead API server would otherwise keep a client's watch
			// hanging.
			_, _ = io.Copy(client, s.current())
			return
		}
		if err == nil {
			continue
		}
		// Closed before it answered a TLS client's hello (or before the
		// client said anything): the backend saw nothing it could have
		// acted on (a TLS client sends no data before the server's
		// hello). An API server killed with the connection still in its
		// listen queue does this; the next backend gets the same bytes,
		// and the client never notices.
		if !s.canReplay() || ctx.Err() != nil {
			return
		}
		// A backend that drops a TLS hello unanswered is going away:
		// new connections avoid it until its next health check says
		// otherwise. (One that closes a silent client's connection, as
		// an API server does after its handshake timeout, may be fine.)
		if s.heard() && lb.healthy[index].Swap(false) {
			lb.cfg.Log.Printf("backend %s healthy=false (closed a connection before answering)", lb.cfg.Backends[index])
		}
		next, i := dialNext()
		if next == nil {
			lb.cfg.Log.Printf("backend %s closed %s's connection before answering, and no other backend is reachable", lb.cfg.Backends[index], client.RemoteAddr())
			return
		}
		lb.cfg.Log.Printf("backend %s closed %s's connection before answering; sent to %s", lb.cfg.Backends[index], client.RemoteAddr(), lb.cfg.Backends[i])
		if !s.replay(next) {
			return
		}
		index = i
	}
}

// maxReplay bounds the client's bytes kept for a replay. A TLS client
// hello is a few hundred bytes, a few KiB with many extensions; more
// than this before the server's first byte is not a TLS handshake.
const maxReplay = 16 << 10

// tlsHandshakeRecord is the first byte of a TLS client's first record.
// Only a TLS handshake is replayed: a plain-text client's request may
// have been acted on by a backend that then closed without a word.
const tlsHandshakeRecord = 0x16

// replayWriteTimeout bounds the replay's write: a backend that accepts
// and then reads nothing must not hold the connection (and Serve's
// shutdown) forever.
const replayWriteTimeout = 2 * time.Second

// splice is one client connection's path to its backend. Until the
// backend's first byte it keeps what the client sent, so that the
// connection can move to another backend (replay).
type splice struct {
	mu         sync.Mutex
	backend    net.Conn
	sent       []byte
	replayable bool
	ended      bool
}

func (s *splice) current() net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.backend
}

// answered: the backend has spoken, so the connection stays with it.
func (s *splice) answered() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replayable, s.sent = false, nil
}

func (s *splice) canReplay() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replayable && !s.ended
}

// heard says whether the client has sent anything yet.
func (s *splice) heard() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent) > 0
}

// replay sends what the client sent so far to next and makes it the
// backend. Under the lock, so that the client's later bytes follow
// these; the write has a deadline, so end (which closes the backend)
// waits at most that long.
func (s *splice) replay(next net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.replayable || s.ended {
		next.Close()
		return false
	}
	old := s.backend
	s.backend = next
	old.Close()
	_ = next.SetWriteDeadline(time.Now().Add(replayWriteTimeout))
	// A failed write shows as the next read's error: the loop moves on.
	_, _ = next.Write(s.sent)
	_ = next.SetWriteDeadline(time.Time{})
	return true
}

// end stops any replay and closes the backend: the client is gone.
func (s *splice) end() {
	s.mu.Lock()
	s.ended = true
	b := s.backend
	s.mu.Unlock()
	b.Close()
}

// clientToBackend copies the client's bytes to the current backend. It
// keeps them while the connection may still move, and hands over to
// io.Copy (the kernel's splice between two TCP connections) once the
// backend has answered.
func (s *splice) clientToBackend(client net.Conn) {
	defer s.end()
	buf := make([]byte, 16<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			s.mu.Lock()
			if s.replayable {
				first := len(s.sent) == 0
				if (first && buf[0] != tlsHandshakeRecord) || len(s.sent)+n > maxReplay {
					s.replayable, s.sent = false, nil
				} else {
					s.sent = append(s.sent, buf[:n]...)
				}
			}
			b, movable := s.backend, s.replayable
			s.mu.Unlock()
			// A backend that went away before answering is replaced,
			// these bytes included; otherwise the connection is over.
			if _, err := b.Write(buf[:n]); err != nil && !movable {
				return
			}
			if !movable {
				// Answered (or not replayable): this backend for good.
				_, _ = io.Copy(b, client)
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// String describes the configuration.
func (c Config) String() string {
	return fmt.Sprintf("listen=%s backends=%v health=%q", c.Listen, c.Backends, c.HealthPath)
}
