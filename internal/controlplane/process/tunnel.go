package process

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/supervisor"
)

// The tunnel: each kube-apiserver sends the traffic of its `cluster` egress
// (webhooks, aggregated APIs, the pod/Service proxy, kubelet connections for
// logs/exec/port-forward) over a Unix socket to a konnectivity server of its
// own; the konnectivity agents inside the tenant cluster dial out to every
// server through the tunnel endpoint on the nodes network's gateway and carry
// the traffic into the cluster's network. Nothing of a tenant's pod or Service
// ranges is ever routed by the host.

// Component names of the tunnel's processes.
const (
	CompTunnelServer   = "konnectivity-server"
	CompTunnelEndpoint = "tunnel-endpoint"
)

// tunnelSocket is the Unix socket between API server i and its konnectivity
// server. It lives under a short path (a socket path has at most 107 bytes)
// named by a hash of the key, and only root can reach it (the run directory
// is 0700): whoever can write to it can send requests into the cluster.
func (b *Backend) tunnelSocket(key string, i int) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(b.runDir(), fmt.Sprintf("%s-konn-%d.sock", hex.EncodeToString(sum[:])[:12], i))
}

func (b *Backend) runDir() string { return filepath.Join(b.StateDir, "run") }

// removeTunnelSockets removes the sockets a deleted control plane leaves.
func (b *Backend) removeTunnelSockets(key string) {
	sock := b.tunnelSocket(key, 0)
	matches, _ := filepath.Glob(strings.TrimSuffix(sock, "0.sock") + "*.sock")
	for _, m := range matches {
		os.Remove(m)
	}
}

func (b *Backend) egressSelectorFile(key string, i int) string {
	return filepath.Join(b.Dir(key), fmt.Sprintf("egress-selector-%d.yaml", i))
}

// egressSelectorConfig sends the `cluster` egress of an API server to its
// konnectivity server; `controlplane` (etcd, its own webhooks on loopback)
// stays direct.
func egressSelectorConfig(socket string) string {
	return fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: GRPC
    transport:
      uds:
        udsName: %s
`, socket)
}

func (b *Backend) tunnelServerSpecs(spec controlplane.Spec, l Layout, p pki.ClusterPKI) []supervisor.Spec {
	if l.Tunnel == nil {
		return nil
	}
	t := l.Tunnel
	specs := make([]supervisor.Spec, 0, len(t.Agent))
	for i := range t.Agent {
		specs = append(specs, supervisor.Spec{
			Name: processName(spec.Key, CompTunnelServer, i),
			Path: spec.Binaries.Path("konnectivity-server"),
			Args: []string{
				"--mode=grpc",
				"--uds-name=" + b.tunnelSocket(spec.Key, i),
				"--delete-existing-uds-file=true",
				"--server-port=0",
				fmt.Sprintf("--agent-port=%d", t.Agent[i]),
				"--agent-bind-address=127.0.0.1",
				fmt.Sprintf("--admin-port=%d", t.Admin[i]),
				"--admin-bind-address=127.0.0.1",
				fmt.Sprintf("--health-port=%d", t.Health[i]),
				"--health-bind-address=127.0.0.1",
				// Agents authenticate with a client certificate of the
				// tunnel's own CA.
				"--cluster-cert=" + p.Cert(pki.KonnectivityServerName),
				"--cluster-key=" + p.Key(pki.KonnectivityServerName),
				"--cluster-ca-cert=" + p.Cert(pki.KonnectivityCAName),
				fmt.Sprintf("--server-count=%d", len(t.Agent)),
				fmt.Sprintf("--server-id=%s-%d", strings.ReplaceAll(spec.Key, "/", "-"), i),
				// Kubelet traffic goes to the agent on that node when
				// there is one; anything else to any agent.
				"--proxy-strategies=destHost,default",
				"--keepalive-time=30s",
				"--frontend-keepalive-time=30s",
			},
			LogFile: b.logFile(spec.Key, CompTunnelServer, i),
			Tier:    1,
		})
	}
	return withCredentials(p, specs)
}

func (b *Backend) ensureTunnelServers(ctx context.Context, spec controlplane.Spec, l Layout, p pki.ClusterPKI) (bool, string, error) {
	if l.Tunnel == nil {
		return true, "", nil
	}
	if err := os.MkdirAll(b.runDir(), 0o700); err != nil {
		return false, "", err
	}
	probe := func(ctx context.Context) []controlplane.ComponentHealth { return b.tunnelHealth(ctx, l) }
	current, msg, err := b.rollout(ctx, CompTunnelServer, b.tunnelServerSpecs(spec, l, p), probe, "", nil)
	if err != nil || !current {
		return false, msg, err
	}
	health := probe(ctx)
	return anyHealthy(health), describeUnhealthy(health), nil
}

// writeEgressSelectors writes each API server's egress configuration (they
// must exist before the API servers start).
func (b *Backend) writeEgressSelectors(spec controlplane.Spec, l Layout) error {
	if l.Tunnel == nil {
		return nil
	}
	for i := range l.APIServer {
		if err := fsutil.WriteIfChanged(b.egressSelectorFile(spec.Key, i), []byte(egressSelectorConfig(b.tunnelSocket(spec.Key, i))), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) tunnelHealth(ctx context.Context, l Layout) []controlplane.ComponentHealth {
	if l.Tunnel == nil {
		return nil
	}
	c := &http.Client{Timeout: probeTimeout}
	return probeAll(ctx, CompTunnelServer, l.Tunnel.Health, func(ctx context.Context, port int) (bool, string) {
		return probe(ctx, c, fmt.Sprintf("http://127.0.0.1:%d/healthz", port), "ok")
	})
}

// tunnelEndpointSpec is the load balancer on the gateway that agents dial:
// it spreads their connections over every server's agent port, so agents
// that keep dialling until they hold one connection per server
// (--server-count) reach them all.
func (b *Backend) tunnelEndpointSpec(spec controlplane.Spec, l Layout) supervisor.Spec {
	return b.proxySpec(spec.Key, CompTunnelEndpoint, fmt.Sprintf("%s:%d", l.Gateway(), l.Tunnel.Node), l.Tunnel.Agent, "")
}

// TunnelCredentials returns what an agent needs: the CA that signed the
// server's certificate and the agent's client certificate and key.
func (b *Backend) TunnelCredentials(spec controlplane.Spec) (controlplane.TunnelCredentials, error) {
	return controlplane.TunnelCredentialsOf(b.PKI(spec.Key))
}

// AddonServing issues (once) an addon's serving certificate from the
// cluster's addons CA.
func (b *Backend) AddonServing(spec controlplane.Spec, name string, dnsNames []string) (controlplane.ServingCredentials, error) {
	return controlplane.AddonServingOf(b.PKI(spec.Key), name, dnsNames)
}
