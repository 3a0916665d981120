// Package servicelb is the data plane of LoadBalancer Services: one
// balancer per Service address that listens on each of the Service's ports
// (TCP or UDP) and forwards to the node ports of healthy nodes. It enforces
// the allowed source ranges, can prepend the PROXY protocol header (v1 or
// v2) so backends see the real client, and takes a new configuration in
// place: listeners that did not change keep their connections.
package servicelb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"
)

// Protocols of a listener.
const (
	TCP = "TCP"
	UDP = "UDP"
)

// Algorithms that choose a backend for a new connection.
const (
	RoundRobin       = "round_robin"
	LeastConnections = "least_connections"
	SourceIP         = "source_ip"
)

// Spec is the whole configuration of one balancer.
type Spec struct {
	// Address is the IP the listeners bind.
	Address   string     `json:"address"`
	Listeners []Listener `json:"listeners"`
}

// Listener is one port of the Service.
type Listener struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
	// Backends are host:port of the node ports.
	Backends []string `json:"backends"`
	// AllowedCIDRs limits the clients; empty allows all.
	AllowedCIDRs []string `json:"allowedCIDRs,omitempty"`
	// ProxyProtocol prepends a PROXY header of version 1 or 2 to each TCP
	// connection (0: none).
	ProxyProtocol int    `json:"proxyProtocol,omitempty"`
	Algorithm     string `json:"algorithm,omitempty"`
	// Health checks each backend.
	Health HealthCheck `json:"health"`
	// Timeouts: connecting to a backend, and how long a UDP flow lives
	// without packets.
	ConnectTimeout time.Duration `json:"connectTimeout,omitempty"`
	IdleTimeout    time.Duration `json:"idleTimeout,omitempty"`
}

// HealthCheck of a listener's backends.
type HealthCheck struct {
	// Type is "tcp" (connect to the backend, or to Port) or "http" (GET
	// Path on Port, 200 is healthy).
	Type string `json:"type,omitempty"`
	// Port checked instead of the backend's own (e.g. kube-proxy's
	// healthCheckNodePort for externalTrafficPolicy: Local).
	Port     int           `json:"port,omitempty"`
	Path     string        `json:"path,omitempty"`
	Interval time.Duration `json:"interval,omitempty"`
	Timeout  time.Duration `json:"timeout,omitempty"`
	// UpThreshold and DownThreshold: consecutive results that change a
	// backend's state.
	UpThreshold   int `json:"upThreshold,omitempty"`
	DownThreshold int `json:"downThreshold,omitempty"`
}

func (l *Listener) defaults() {
	if l.Algorithm == "" {
		l.Algorithm = RoundRobin
	}
	if l.ConnectTimeout == 0 {
		l.ConnectTimeout = 2 * time.Second
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = 30 * time.Second
	}
	h := &l.Health
	if h.Type == "" {
		h.Type = "tcp"
	}
	if h.Interval == 0 {
		h.Interval = 2 * time.Second
	}
	if h.Timeout == 0 {
		h.Timeout = time.Second
	}
	if h.UpThreshold == 0 {
		h.UpThreshold = 1
	}
	if h.DownThreshold == 0 {
		h.DownThreshold = 2
	}
}

// Validate names the first thing wrong with a spec.
func (s Spec) Validate() error {
	if _, err := netip.ParseAddr(s.Address); err != nil {
		return fmt.Errorf("address %q: %w", s.Address, err)
	}
	seen := map[string]bool{}
	for _, l := range s.Listeners {
		key := fmt.Sprintf("%s/%d", l.Protocol, l.Port)
		switch {
		case l.Protocol != TCP && l.Protocol != UDP:
			return fmt.Errorf("listener %s: protocol %q, want TCP or UDP", l.Name, l.Protocol)
		case l.Port < 1 || l.Port > 65535:
			return fmt.Errorf("listener %s: port %d", l.Name, l.Port)
		case seen[key]:
			return fmt.Errorf("listener %s: %s twice", l.Name, key)
		case l.ProxyProtocol != 0 && (l.ProxyProtocol < 1 || l.ProxyProtocol > 2 || l.Protocol != TCP):
			return fmt.Errorf("listener %s: PROXY protocol v%d (1 or 2, TCP only)", l.Name, l.ProxyProtocol)
		case l.Algorithm != "" && !slices.Contains([]string{RoundRobin, LeastConnections, SourceIP}, l.Algorithm):
			return fmt.Errorf("listener %s: algorithm %q", l.Name, l.Algorithm)
		case l.Health.Type != "" && l.Health.Type != "tcp" && l.Health.Type != "http":
			return fmt.Errorf("listener %s: health check type %q, want tcp or http", l.Name, l.Health.Type)
		}
		seen[key] = true
		for _, c := range l.AllowedCIDRs {
			if _, err := netip.ParsePrefix(c); err != nil {
				return fmt.Errorf("listener %s: allowed CIDR %q: %w", l.Name, c, err)
			}
		}
		for _, b := range l.Backends {
			if _, err := netip.ParseAddrPort(b); err != nil {
				return fmt.Errorf("listener %s: backend %q: %w", l.Name, b, err)
			}
		}
	}
	return nil
}

// Balancer serves one Spec until its context ends.
type Balancer struct {
	log *log.Logger

	mu        sync.Mutex
	address   string
	listeners map[string]*listener // protocol/port -> running listener
}

// New returns a balancer; Apply starts its listeners.
func New(logger *log.Logger) *Balancer {
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	return &Balancer{log: logger, listeners: map[string]*listener{}}
}

// Apply brings the running listeners to spec: new ones start, removed ones
// stop, changed ones take their new backends and settings without closing
// what is in flight. The listeners run until ctx ends.
func (b *Balancer) Apply(ctx context.Context, spec Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.address != "" && b.address != spec.Address {
		for k, l := range b.listeners {
			l.stop()
			delete(b.listeners, k)
		}
	}
	b.address = spec.Address
	want := map[string]bool{}
	var errs []error
	for _, cfg := range spec.Listeners {
		cfg.defaults()
		key := fmt.Sprintf("%s/%d", cfg.Protocol, cfg.Port)
		want[key] = true
		if l, ok := b.listeners[key]; ok {
			l.update(cfg)
			continue
		}
		l, err := startListener(ctx, spec.Address, cfg, b.log)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b.listeners[key] = l
	}
	for k, l := range b.listeners {
		if !want[k] {
			l.stop()
			delete(b.listeners, k)
		}
	}
	return errors.Join(errs...)
}

// Stop ends every listener.
func (b *Balancer) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, l := range b.listeners {
		l.stop()
		delete(b.listeners, k)
	}
}

// Healthy reports, per listener ("TCP/80"), the backends currently healthy.
func (b *Balancer) Healthy() map[string][]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string][]string{}
	for k, l := range b.listeners {
		out[k] = l.healthyBackends()
	}
	return out
}

// allowed says whether a client may use the listener.
func allowed(cidrs []netip.Prefix, addr net.Addr) bool {
	if len(cidrs) == 0 {
		return true
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, c := range cidrs {
		if c.Contains(ip) {
			return true
		}
	}
	return false
}

// RunFile serves the spec in the JSON file at path until ctx ends, and
// applies the file again whenever it changes (the controller rewrites it
// atomically), so a changed Service is served in place.
func RunFile(ctx context.Context, path string, logger *log.Logger) error {
	b := New(logger)
	defer b.Stop()
	var last []byte
	load := func() error {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Equal(data, last) {
			return nil
		}
		var spec Spec
		if err := json.Unmarshal(data, &spec); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := b.Apply(ctx, spec); err != nil {
			return err
		}
		last = data
		b.log.Printf("serving %s (%d listeners)", spec.Address, len(spec.Listeners))
		return nil
	}
	if err := load(); err != nil {
		return err
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := load(); err != nil {
				b.log.Printf("keeping the running configuration: %v", err)
			}
		}
	}
}
