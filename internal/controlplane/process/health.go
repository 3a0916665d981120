package process

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/pki"
)

const probeTimeout = 2 * time.Second

// httpsClient trusts caFile and optionally presents a client certificate.
func httpsClient(caFile, certFile, keyFile string) (*http.Client, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no certificate", caFile)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{
		Timeout:   probeTimeout,
		Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true},
	}, nil
}

// probe GETs url and wants 200 with a body containing want (if set).
func probe(ctx context.Context, c *http.Client, url, want string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, shortError(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Sprintf("%s answered %d", url, resp.StatusCode)
	}
	if want != "" && !strings.Contains(string(body), want) {
		return false, fmt.Sprintf("%s answered %q", url, strings.TrimSpace(string(body)))
	}
	return true, ""
}

func shortError(err error) string {
	s := err.Error()
	if strings.Contains(s, "connection refused") {
		return "not listening yet (connection refused)"
	}
	return s
}

func (b *Backend) etcdHealth(ctx context.Context, l Layout, p pki.ClusterPKI) []controlplane.ComponentHealth {
	c, err := httpsClient(p.Cert(pki.EtcdCAName), p.Cert(pki.EtcdAdminName), p.Key(pki.EtcdAdminName))
	return probeAll(ctx, CompEtcd, l.EtcdHTTP, func(ctx context.Context, port int) (bool, string) {
		if err != nil {
			return false, err.Error()
		}
		ok, msg := probe(ctx, c, fmt.Sprintf("https://127.0.0.1:%d/health", port), `"health":"true"`)
		if !ok {
			// A member started by an older lotse serves HTTP on its
			// client port until the rollout replaces it.
			if i := slices.Index(l.EtcdHTTP, port); i >= 0 && i < len(l.EtcdClient) {
				if old, _ := probe(ctx, c, fmt.Sprintf("https://127.0.0.1:%d/health", l.EtcdClient[i]), `"health":"true"`); old {
					return true, ""
				}
			}
		}
		return ok, msg
	})
}

func (b *Backend) apiServerHealth(ctx context.Context, l Layout, p pki.ClusterPKI) []controlplane.ComponentHealth {
	c, err := httpsClient(p.TrustBundle(), "", "")
	return probeAll(ctx, CompAPIServer, l.APIServer, func(ctx context.Context, port int) (bool, string) {
		if err != nil {
			return false, err.Error()
		}
		return probe(ctx, c, fmt.Sprintf("https://127.0.0.1:%d/readyz", port), "ok")
	})
}

func (b *Backend) healthzAll(ctx context.Context, component string, portList []int, p pki.ClusterPKI) []controlplane.ComponentHealth {
	c, err := httpsClient(p.TrustBundle(), "", "")
	return probeAll(ctx, component, portList, func(ctx context.Context, port int) (bool, string) {
		if err != nil {
			return false, err.Error()
		}
		return probe(ctx, c, fmt.Sprintf("https://127.0.0.1:%d/healthz", port), "ok")
	})
}

func (b *Backend) probeReadyz(ctx context.Context, endpoint string, p pki.ClusterPKI) (bool, string) {
	c, err := httpsClient(p.TrustBundle(), "", "")
	if err != nil {
		return false, err.Error()
	}
	return probe(ctx, c, endpoint+"/readyz", "ok")
}

func probeAll(ctx context.Context, component string, portList []int, check func(context.Context, int) (bool, string)) []controlplane.ComponentHealth {
	out := make([]controlplane.ComponentHealth, len(portList))
	var wg sync.WaitGroup
	for i, port := range portList {
		wg.Add(1)
		go func(i, port int) {
			defer wg.Done()
			ok, msg := check(ctx, port)
			out[i] = controlplane.ComponentHealth{Name: fmt.Sprintf("%s-%d", component, i), Healthy: ok, Message: msg}
		}(i, port)
	}
	wg.Wait()
	return out
}

func quorum(hs []controlplane.ComponentHealth) bool {
	n := 0
	for _, h := range hs {
		if h.Healthy {
			n++
		}
	}
	return n > len(hs)/2
}

func anyHealthy(hs []controlplane.ComponentHealth) bool {
	for _, h := range hs {
		if h.Healthy {
			return true
		}
	}
	return false
}

func describeUnhealthy(hs []controlplane.ComponentHealth) string {
	var parts []string
	for _, h := range hs {
		if !h.Healthy {
			parts = append(parts, h.Name+": "+h.Message)
		}
	}
	return strings.Join(parts, "; ")
}

// Status probes every component of a control plane.
func (b *Backend) Status(ctx context.Context, spec controlplane.Spec) controlplane.Status {
	l, err := b.LoadLayout(spec.Key)
	if err != nil {
		return controlplane.Status{APIServerMessage: "control plane not created yet"}
	}
	p := b.PKI(spec.Key)
	st := controlplane.Status{Endpoint: l.Endpoint()}
	var mu sync.Mutex
	var wg sync.WaitGroup
	add := func(f func() []controlplane.ComponentHealth) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hs := f()
			mu.Lock()
			st.Components = append(st.Components, hs...)
			mu.Unlock()
		}()
	}
	if l.SharedDatastore {
		add(func() []controlplane.ComponentHealth { return b.datastoreHealth(ctx) })
	} else {
		add(func() []controlplane.ComponentHealth { return b.etcdHealth(ctx, l, p) })
	}
	add(func() []controlplane.ComponentHealth { return b.apiServerHealth(ctx, l, p) })
	add(func() []controlplane.ComponentHealth {
		return b.healthzAll(ctx, CompControllerManager, l.ControllerManager, p)
	})
	if !spec.WithoutScheduler {
		add(func() []controlplane.ComponentHealth { return b.healthzAll(ctx, CompScheduler, l.Scheduler, p) })
	}
	if spec.CloudController != nil {
		add(func() []controlplane.ComponentHealth {
			return b.healthzAll(ctx, CompCloudController, l.CloudController, p)
		})
	}
	add(func() []controlplane.ComponentHealth { return b.tunnelHealth(ctx, l) })
	wg.Add(1)
	go func() {
		defer wg.Done()
		ok, msg := b.probeReadyz(ctx, l.Endpoint(), p)
		mu.Lock()
		st.APIServerAvailable, st.APIServerMessage = ok, msg
		if l.LoadBalancer != 0 {
			st.Components = append(st.Components, controlplane.ComponentHealth{Name: CompLoadBalancer + "-0", Healthy: ok, Message: msg})
		}
		mu.Unlock()
	}()
	wg.Wait()
	sortComponents(st.Components)
	st.EncryptionProvider, _ = p.PrimaryEncryptionProvider()
	if b.Supervisor != nil { // a backend that only observes (tests, the CLI) knows no processes
		st.Rollout = b.rolloutStatus(spec, l, p)
	}
	return st
}

func sortComponents(cs []controlplane.ComponentHealth) {
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
}
