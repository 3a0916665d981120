package servicelb

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// backend is one node port and what the listener knows of it.
type backend struct {
	addr    string
	healthy atomic.Bool
	active  atomic.Int64 // open connections (least_connections)
	ups     int          // consecutive results, touched by the health loop only
	downs   int
}

type listener struct {
	log    *log.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.RWMutex
	cfg      Listener
	cidrs    []netip.Prefix
	backends []*backend
	next     atomic.Uint64
}

func startListener(parent context.Context, address string, cfg Listener, logger *log.Logger) (*listener, error) {
	ctx, cancel := context.WithCancel(parent)
	l := &listener{log: logger, cancel: cancel, done: make(chan struct{})}
	l.update(cfg)
	hostPort := net.JoinHostPort(address, strconv.Itoa(cfg.Port))
	var serve func(context.Context) error
	switch cfg.Protocol {
	case TCP:
		ln, err := net.Listen("tcp", hostPort)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("listener %s: %w", cfg.Name, err)
		}
		serve = func(ctx context.Context) error { return l.serveTCP(ctx, ln) }
	case UDP:
		pc, err := net.ListenPacket("udp", hostPort)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("listener %s: %w", cfg.Name, err)
		}
		serve = func(ctx context.Context) error { return l.serveUDP(ctx, pc) }
	}
	l.checkAll(ctx) // know the backends' state before the first client
	go l.healthLoop(ctx)
	go func() {
		defer close(l.done)
		if err := serve(ctx); err != nil && ctx.Err() == nil {
			logger.Printf("listener %s %s: %v", cfg.Name, hostPort, err)
		}
	}()
	logger.Printf("listening on %s/%s (%s) for %v", hostPort, cfg.Protocol, cfg.Name, cfg.Backends)
	return l, nil
}

// update takes a new configuration; backends that stay keep their state.
func (l *listener) update(cfg Listener) {
	var cidrs []netip.Prefix
	for _, c := range cfg.AllowedCIDRs {
		if p, err := netip.ParsePrefix(c); err == nil {
			cidrs = append(cidrs, p.Masked())
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := map[string]*backend{}
	for _, b := range l.backends {
		old[b.addr] = b
	}
	var backends []*backend
	for _, addr := range cfg.Backends {
		if b, ok := old[addr]; ok {
			backends = append(backends, b)
			continue
		}
		// A new backend counts as healthy until a check says otherwise:
		// a new node should not wait a whole interval for its first client.
		b := &backend{addr: addr}
		b.healthy.Store(true)
		backends = append(backends, b)
	}
	l.cfg, l.cidrs, l.backends = cfg, cidrs, backends
}

func (l *listener) stop() {
	l.cancel()
	<-l.done
}

func (l *listener) snapshot() (Listener, []netip.Prefix, []*backend) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.cfg, l.cidrs, l.backends
}

func (l *listener) healthyBackends() []string {
	_, _, backends := l.snapshot()
	var out []string
	for _, b := range backends {
		if b.healthy.Load() {
			out = append(out, b.addr)
		}
	}
	return out
}

// pick orders the backends to try for a client: healthy ones by the
// algorithm, then (if none is healthy) all of them.
func (l *listener) pick(client net.Addr) []*backend {
	cfg, _, backends := l.snapshot()
	var healthy []*backend
	for _, b := range backends {
		if b.healthy.Load() {
			healthy = append(healthy, b)
		}
	}
	if len(healthy) == 0 {
		healthy = backends
	}
	n := len(healthy)
	if n == 0 {
		return nil
	}
	start := 0
	switch cfg.Algorithm {
	case SourceIP:
		h := fnv.New32a()
		if ap, err := netip.ParseAddrPort(client.String()); err == nil {
			h.Write(ap.Addr().AsSlice())
		}
		start = int(h.Sum32() % uint32(n))
	case LeastConnections:
		for i, b := range healthy {
			if b.active.Load() < healthy[start].active.Load() {
				start = i
			}
		}
	default:
		start = int(l.next.Add(1) % uint64(n))
	}
	out := make([]*backend, 0, n)
	for k := 0; k < n; k++ {
		out = append(out, healthy[(start+k)%n])
	}
	return out
}

func (l *listener) healthLoop(ctx context.Context) {
	for {
		cfg, _, _ := l.snapshot()
		select {
		case <-ctx.Done():
			return
		case <-time.After(cfg.Health.Interval):
			l.checkAll(ctx)
		}
	}
}

func (l *listener) checkAll(ctx context.Context) {
	cfg, _, backends := l.snapshot()
	var wg sync.WaitGroup
	for _, b := range backends {
		wg.Add(1)
		go func(b *backend) {
			defer wg.Done()
			ok := check(ctx, cfg.Health, b.addr)
			l.mu.Lock()
			defer l.mu.Unlock()
			if ok {
				b.ups, b.downs = b.ups+1, 0
				if !b.healthy.Load() && b.ups >= cfg.Health.UpThreshold {
					b.healthy.Store(true)
					l.log.Printf("listener %s: backend %s healthy", cfg.Name, b.addr)
				}
			} else {
				b.ups, b.downs = 0, b.downs+1
				if b.healthy.Load() && b.downs >= cfg.Health.DownThreshold {
					b.healthy.Store(false)
					l.log.Printf("listener %s: backend %s unhealthy", cfg.Name, b.addr)
				}
			}
		}(b)
	}
	wg.Wait()
}

// check probes one backend: a TCP connect, or an HTTP GET answered 200.
func check(ctx context.Context, h HealthCheck, addr string) bool {
	if h.Port != 0 {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return false
		}
		addr = net.JoinHostPort(host, strconv.Itoa(h.Port))
	}
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	if h.Type == "http" {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+h.Path, nil)
		if err != nil {
			return false
		}
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Connecting to a backend: rounds over the picked backends, a pause
// between rounds, all within a budget of connectRounds connect timeouts.
const (
	connectRounds     = 3
	connectRoundPause = 200 * time.Millisecond
)

// dialBackend connects a client to a backend, as HAProxy's retries and
// redispatch do: a backend that refuses or does not answer is followed by
// the next, and when a whole round failed, another round after a pause.
// A node port can refuse for a moment though the node is healthy: its
// kube-proxy still sends a share of new connections to a pod that has just
// stopped listening, until the endpoint's removal reaches it. Another try
// meets a serving pod; the client sees no error.
func (l *listener) dialBackend(ctx context.Context, client net.Addr, timeout time.Duration) (net.Conn, *backend) {
	deadline := time.Now().Add(connectRounds * timeout)
	for round := 0; round < connectRounds; round++ {
		if round > 0 {
			select {
			case <-ctx.Done():
				return nil, nil
			case <-time.After(connectRoundPause):
			}
		}
		for _, b := range l.pick(client) {
			left := time.Until(deadline)
			if left <= 0 {
				return nil, nil
			}
			var d net.Dialer
			dctx, cancel := context.WithTimeout(ctx, min(timeout, left))
			c, err := d.DialContext(dctx, "tcp", b.addr)
			cancel()
			if err == nil {
				return c, b
			}
		}
	}
	return nil, nil
}

func (l *listener) serveTCP(ctx context.Context, ln net.Listener) error {
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
		go func() { defer wg.Done(); l.handleTCP(ctx, conn) }()
	}
}

func (l *listener) handleTCP(ctx context.Context, client net.Conn) {
	defer client.Close()
	cfg, cidrs, _ := l.snapshot()
	if !allowed(cidrs, client.RemoteAddr()) {
		return // refused: closed before a byte is read
	}
	conn, chosen := l.dialBackend(ctx, client.RemoteAddr(), cfg.ConnectTimeout)
	if conn == nil {
		l.log.Printf("listener %s: no backend reachable for %s", cfg.Name, client.RemoteAddr())
		return
	}
	defer conn.Close()
	chosen.active.Add(1)
	defer chosen.active.Add(-1)
	if cfg.ProxyProtocol != 0 {
		header, err := proxyHeader(cfg.ProxyProtocol, client.RemoteAddr(), client.LocalAddr())
		if err != nil {
			l.log.Printf("listener %s: PROXY header: %v", cfg.Name, err)
			return
		}
		if _, err := conn.Write(header); err != nil {
			return
		}
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite() // pass the half-close on
		}
		done <- struct{}{}
	}
	go pipe(conn, client)
	go pipe(client, conn)
	for i := 0; i < 2; i++ {
		select {
		case <-done:
		case <-ctx.Done():
			return
		}
	}
}

// serveUDP forwards datagrams: each client address gets a socket to one
// backend, whose replies go back to that client, until the flow has been
// idle for IdleTimeout.
func (l *listener) serveUDP(ctx context.Context, pc net.PacketConn) error {
	go func() { <-ctx.Done(); pc.Close() }()
	var mu sync.Mutex
	flows := map[string]net.Conn{}
	buf := make([]byte, 64*1024)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		cfg, cidrs, _ := l.snapshot()
		if !allowed(cidrs, from) {
			continue
		}
		mu.Lock()
		flow, ok := flows[from.String()]
		mu.Unlock()
		if !ok {
			for _, b := range l.pick(from) {
				if c, err := net.DialTimeout("udp", b.addr, cfg.ConnectTimeout); err == nil {
					flow = c
					break
				}
			}
			if flow == nil {
				continue
			}
			mu.Lock()
			flows[from.String()] = flow
			mu.Unlock()
			go func(flow net.Conn, client net.Addr, idle time.Duration) {
				defer func() {
					mu.Lock()
					delete(flows, client.String())
					mu.Unlock()
					flow.Close()
				}()
				reply := make([]byte, 64*1024)
				for {
					_ = flow.SetReadDeadline(time.Now().Add(idle))
					n, err := flow.Read(reply)
					if err != nil {
						return
					}
					if _, err := pc.WriteTo(reply[:n], client); err != nil {
						return
					}
				}
			}(flow, from, cfg.IdleTimeout)
		}
		_, _ = flow.Write(buf[:n])
	}
}
