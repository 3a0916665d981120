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
	lb.client = &http.Client{Timeout: lb.cfg.Interval, Transport: &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true}}
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
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// pick returns backends to try, healthy ones first in round-robin order;
// if none is known healthy, all of them (a check may simply be stale).
func (lb *LoadBalancer) pick() []string {
	n := len(lb.cfg.Backends)
	start := int(lb.next.Add(1) % uint64(n))
	var healthy, rest []string
	for k := 0; k < n; k++ {
		i := (start + k) % n
		if lb.healthy[i].Load() {
			healthy = append(healthy, lb.cfg.Backends[i])
		} else {
			rest = append(rest, lb.cfg.Backends[i])
		}
	}
	return append(healthy, rest...)
}

func (lb *LoadBalancer) handle(ctx context.Context, client net.Conn) {
	defer client.Close()
	var backend net.Conn
	for _, addr := range lb.pick() {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			backend = c
			break
		}
	}
	if backend == nil {
		lb.cfg.Log.Printf("no backend reachable for %s", client.RemoteAddr())
		return
	}
	defer backend.Close()
	// When either side ends, end both: a half-open connection to a dead
	// API server would otherwise keep a client's watch hanging.
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(backend, client)
	go pipe(client, backend)
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// String describes the configuration.
func (c Config) String() string {
	return fmt.Sprintf("listen=%s backends=%v health=%q", c.Listen, c.Backends, c.HealthPath)
}
