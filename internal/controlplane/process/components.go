package process

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/supervisor"
)

// Component names (also the prefixes of process names and log files).
const (
	CompEtcd              = "etcd"
	CompAPIServer         = "kube-apiserver"
	CompControllerManager = "kube-controller-manager"
	CompScheduler         = "kube-scheduler"
	CompLoadBalancer      = "loadbalancer"
)

func (b *Backend) etcdSpecs(spec controlplane.Spec, l Layout, p pki.ClusterPKI) []supervisor.Spec {
	members := l.etcdMembers()
	specs := make([]supervisor.Spec, 0, len(members))
	for _, i := range members {
		specs = append(specs, b.etcdSpec(spec, l, p, i))
	}
	return specs
}

// apiServerEnv tunes the API server's garbage collector when asked to.
// Most of an idle API server's heap is live (caches, the API's OpenAPI
// documents, schemes); GOGC trades the headroom above it for collections.
// A fixed GOMEMLIMIT is not offered: once a larger cluster's live heap
// reached it, the API server would collect without end.
func (b *Backend) apiServerEnv() []string {
	if b.APIServerGOGC <= 0 {
		return nil
	}
	return []string{fmt.Sprintf("GOGC=%d", b.APIServerGOGC)}
}

// etcdSpec is the process of member i.
func (b *Backend) etcdSpec(spec controlplane.Spec, l Layout, p pki.ClusterPKI, i int) supervisor.Spec {
	return b.etcdMemberSpec(spec.Key, spec.Binaries.Path("etcd"), l, p, i)
}

// etcdMemberSpec is the process of member i of the etcd with the given
// key (a control plane's, or the shared datastore's).
func (b *Backend) etcdMemberSpec(key, etcdBinary string, l Layout, p pki.ClusterPKI, i int) supervisor.Spec {
	var initial []string
	for m := range l.EtcdClient {
		initial = append(initial, fmt.Sprintf("etcd-%d=https://127.0.0.1:%d", m, l.EtcdPeer[m]))
	}
	client := fmt.Sprintf("https://127.0.0.1:%d", l.EtcdClient[i])
	peer := fmt.Sprintf("https://127.0.0.1:%d", l.EtcdPeer[i])
	initialCluster, state := strings.Join(initial, ","), "new"
	if j, ok := l.EtcdJoin[i]; ok {
		initialCluster, state = j.InitialCluster, j.State
	}
	return withCredentials(p, []supervisor.Spec{{
		Name: processName(key, CompEtcd, i),
		Path: etcdBinary,
		Args: []string{
			"--name=" + fmt.Sprintf("etcd-%d", i),
			"--data-dir=" + filepath.Join(b.Dir(key), "data", fmt.Sprintf("etcd-%d", i)),
			"--listen-client-urls=" + client,
			fmt.Sprintf("--listen-client-http-urls=https://127.0.0.1:%d", l.EtcdHTTP[i]),
			"--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer,
			"--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=" + initialCluster,
			"--initial-cluster-state=" + state,
			"--initial-cluster-token=" + strings.ReplaceAll(key, "/", "-"),
			"--cert-file=" + p.Cert(pki.EtcdServerName),
			"--key-file=" + p.Key(pki.EtcdServerName),
			"--trusted-ca-file=" + p.Cert(pki.EtcdCAName),
			"--client-cert-auth=true",
			"--peer-cert-file=" + p.Cert(pki.EtcdPeerName),
			"--peer-key-file=" + p.Key(pki.EtcdPeerName),
			"--peer-trusted-ca-file=" + p.Cert(pki.EtcdCAName),
			"--peer-client-cert-auth=true",
			"--log-level=warn",
		},
		LogFile: b.logFile(key, CompEtcd, i),
		// A stopping etcd tells its clients to go elsewhere (its gRPC
		// listener stops gracefully, see Layout.EtcdHTTP) and lets their
		// requests finish, which takes milliseconds, but waits its
		// request timeout (7 s) for the API servers' watch streams. Its
		// WAL makes a kill safe, and a rolling update moves the
		// leadership away before it replaces a leader
		// (handOverLeadership), so a second is enough.
		StopTimeout: time.Second,
	}})[0]
}

func (b *Backend) ensureEtcd(ctx context.Context, spec controlplane.Spec, l Layout, p pki.ClusterPKI) (bool, string, error) {
	if spec.SharedDatastore {
		if ok, msg, err := b.ensureSharedDatastore(ctx, spec.Binaries.Path("etcd"), spec.Binaries.Release.Etcd); !ok || err != nil {
			return ok, msg, err
		}
		return b.ensureDatastoreTenant(ctx, spec, l)
	}
	if b.restoreLeftovers(spec.Key) {
		// A restore stopped half-way and was not taken up again: put
		// the old data back before any member starts.
		unlock := b.lock(spec.Key)
		err := b.rollBackSwap(spec.Key)
		unlock()
		if err != nil {
			return false, "", fmt.Errorf("rolling back an unfinished restore: %w", err)
		}
	}
	probe := func(ctx context.Context) []controlplane.ComponentHealth { return b.etcdHealth(ctx, l, p) }
	hooks := &rolloutHooks{
		last:          func(ctx context.Context) int { return b.etcdLeader(ctx, l, p) },
		beforeReplace: func(ctx context.Context, i int) error { return b.handOverLeadership(ctx, l, p, i) },
	}
	current, msg, err := b.rollout(ctx, CompEtcd, b.etcdSpecs(spec, l, p), probe, b.gate(spec, l, p, CompEtcd), hooks)
	if err != nil || !current {
		return false, msg, err
	}
	if len(l.EtcdPending) > 0 {
		return b.addEtcdMember(ctx, spec, l, p)
	}
	health := probe(ctx)
	return quorum(health), describeUnhealthy(health), nil
}

// apiServerShutdownDelay is how long a stopping API server of an HA
// control plane keeps serving after it reported not ready: a few health
// check intervals of the load balancers.
const apiServerShutdownDelay = 5 * time.Second

// watchTerminationGrace is how long a stopping API server takes to end
// its watches (rate-limited, so their clients do not all come back at once).
const watchTerminationGrace = 2 * time.Second

func (b *Backend) apiServerSpecs(spec controlplane.Spec, l Layout, p pki.ClusterPKI) []supervisor.Spec {
	specs := make([]supervisor.Spec, 0, len(l.APIServer))
	for i, port := range l.APIServer {
		args := []string{
			// Nodes and pods reach the API through the gateway of the
			// nodes network (see Layout.NodeEndpoint).
			"--advertise-address=" + l.Gateway(),
			"--bind-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", port),
		}
		args = append(args, b.etcdClientArgs(spec, l, p)...)
		args = append(args,
			"--client-ca-file="+p.TrustBundle(),
			"--tls-cert-file="+p.Cert(pki.APIServerName),
			"--tls-private-key-file="+p.Key(pki.APIServerName),
			"--kubelet-client-certificate="+p.Cert(pki.APIServerKubeletName),
			"--kubelet-client-key="+p.Key(pki.APIServerKubeletName),
			"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-signing-key-file="+p.Key(pki.ServiceAccountName),
			"--service-cluster-ip-range="+spec.ServiceCIDR,
			"--authorization-mode=Node,RBAC",
			"--enable-admission-plugins=NodeRestriction",
			"--enable-bootstrap-token-auth=true",
			"--encryption-provider-config="+p.Path(pki.EncryptionConfigFile),
			"--requestheader-client-ca-file="+p.Cert(pki.FrontProxyCAName),
			"--requestheader-allowed-names=front-proxy-client",
			"--requestheader-extra-headers-prefix=X-Remote-Extra-",
			"--requestheader-group-headers=X-Remote-Group",
			"--requestheader-username-headers=X-Remote-User",
			"--proxy-client-cert-file="+p.Cert(pki.FrontProxyClientName),
			"--proxy-client-key-file="+p.Key(pki.FrontProxyClientName),
			"--allow-privileged=true",
			"--profiling=false",
			// The API servers listen on loopback ports that differ per
			// instance; Lotse points the `kubernetes` Service at the one
			// node endpoint instead (the cluster-network task).
			"--endpoint-reconciler-type=none",
			// On SIGTERM end the open watches (clients re-watch) instead of
			// waiting up to a minute for them: a restart, an upgrade or a
			// stop takes seconds, not the supervisor's kill timeout.
			"--shutdown-watch-termination-grace-period="+watchTerminationGrace.String(),
		)
		// The current key and, during a rotation, the previous one verify.
		for _, k := range p.ServiceAccountVerifyKeys() {
			args = append(args, "--service-account-key-file="+k)
		}
		if l.Tunnel != nil {
			args = append(args, "--egress-selector-config-file="+b.egressSelectorFile(spec.Key, i))
		}
		if len(l.APIServer) > 1 {
			// Graceful hand-over behind the load balancers: on SIGTERM
			// /readyz fails at once, the balancers (which check it every
			// second) stop sending new connections, the server keeps
			// serving for the delay, then answers what still arrives with
			// 429 + Retry-After (clients retry on the other server) until
			// its in-flight requests are done.
			args = append(args, "--shutdown-delay-duration="+apiServerShutdownDelay.String(), "--shutdown-send-retry-after=true")
		}
		specs = append(specs, supervisor.Spec{
			Name:    processName(spec.Key, CompAPIServer, i),
			Path:    spec.Binaries.Path("kube-apiserver"),
			Args:    args,
			Env:     b.apiServerEnv(),
			LogFile: b.logFile(spec.Key, CompAPIServer, i),
			Tier:    1,
		})
	}
	return withCredentials(p, specs)
}

func (b *Backend) ensureAPIServers(ctx context.Context, spec controlplane.Spec, l Layout, p pki.ClusterPKI) (bool, string, error) {
	if err := b.writeEgressSelectors(spec, l); err != nil {
		return false, "", err
	}
	probe := func(ctx context.Context) []controlplane.ComponentHealth { return b.apiServerHealth(ctx, l, p) }
	current, msg, err := b.rollout(ctx, CompAPIServer, b.apiServerSpecs(spec, l, p), probe, b.gate(spec, l, p, CompAPIServer), nil)
	if err != nil || !current {
		return false, msg, err
	}
	health := probe(ctx)
	ready := anyHealthy(health)
	if !ready {
		b.watchReadiness(spec.Key, probe)
	}
	return ready, describeUnhealthy(health), nil
}

// proxySpec is a `lotse loadbalancer` process of a control plane: it listens
// on listen and spreads connections over the loopback backend ports; with a
// CA it health-checks them with /readyz over HTTPS, else by connecting.
func (b *Backend) proxySpec(key, component, listen string, backends []int, caFile string) supervisor.Spec {
	args := []string{"loadbalancer", "--listen=" + listen}
	if caFile != "" {
		args = append(args, "--health-path=/readyz", "--ca-file="+caFile)
	}
	for _, port := range backends {
		args = append(args, fmt.Sprintf("--backend=127.0.0.1:%d", port))
	}
	return supervisor.Spec{
		Name:    processName(key, component, 0),
		Path:    b.LotseBinary,
		Args:    args,
		LogFile: b.logFile(key, component, 0),
		Tier:    2,
	}
}

func (b *Backend) loadBalancerSpec(spec controlplane.Spec, l Layout, p pki.ClusterPKI) supervisor.Spec {
	return b.proxySpec(spec.Key, CompLoadBalancer, fmt.Sprintf("127.0.0.1:%d", l.LoadBalancer), l.APIServer, p.TrustBundle())
}

func (b *Backend) ensureLoadBalancer(ctx context.Context, spec controlplane.Spec, l Layout, p pki.ClusterPKI) (bool, string, error) {
	lb := b.loadBalancerSpec(spec, l, p)
	if _, running := b.Supervisor.RunningHash(lb.Name); !running {
		// A control plane made highly available: the balancer takes over
		// the port its single API server listened on, once that has
		// moved to its new port.
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", l.LoadBalancer))
		if err != nil {
			return false, fmt.Sprintf("waiting for port %d to be free for the load balancer (the API server moves off it)", l.LoadBalancer), nil
		}
		ln.Close()
	}
	if err := b.Supervisor.Ensure(lb); err != nil {
		return false, "", err
	}
	ok, msg := b.probeReadyz(ctx, l.Endpoint(), p)
	return ok, msg, nil
}

func (b *Backend) controllerManagerSpecs(spec controlplane.Spec, l Layout, p pki.ClusterPKI) []supervisor.Spec {
	kubeconfig := p.Kubeconfig(pki.ControllerMgrName)
	specs := make([]supervisor.Spec, 0, len(l.ControllerManager))
	for i, port := range l.ControllerManager {
		args := []string{
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			"--bind-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", port),
			"--tls-cert-file=" + p.Cert(pki.ControllerMgrServing),
			"--tls-private-key-file=" + p.Key(pki.ControllerMgrServing),
			"--client-ca-file=" + p.TrustBundle(),
			"--requestheader-client-ca-file=" + p.Cert(pki.FrontProxyCAName),
			"--cluster-name=" + spec.Name,
			"--cluster-signing-cert-file=" + p.Cert(pki.CAName),
			"--cluster-signing-key-file=" + p.Key(pki.CAName),
			"--root-ca-file=" + p.TrustBundle(),
			"--service-account-private-key-file=" + p.Key(pki.ServiceAccountName),
			"--use-service-account-credentials=true",
			"--controllers=" + spec.ControllersFlag(),
			"--allocate-node-cidrs=true",
			"--cluster-cidr=" + spec.PodCIDR,
			"--node-cidr-mask-size=24",
			"--service-cluster-ip-range=" + spec.ServiceCIDR,
			"--flex-volume-plugin-dir=" + filepath.Join(b.Dir(spec.Key), "flexvolume"),
			"--profiling=false",
			fmt.Sprintf("--leader-elect=%t", spec.HighAvailability),
		}
		specs = append(specs, supervisor.Spec{
			Name:    processName(spec.Key, CompControllerManager, i),
			Path:    spec.Binaries.Path("kube-controller-manager"),
			Args:    args,
			LogFile: b.logFile(spec.Key, CompControllerManager, i),
			Tier:    3,
		})
	}
	return withCredentials(p, specs)
}

func (b *Backend) ensureControllerManagers(ctx context.Context, spec controlplane.Spec, l Layout, p pki.ClusterPKI) (bool, string, error) {
	if spec.CloudController == nil {
		b.stopCloudControllers(spec, l)
	}
	return b.ensureHealthzComponent(ctx, spec, l, p, CompControllerManager, b.controllerManagerSpecs(spec, l, p), l.ControllerManager)
}

// ensureHealthzComponent rolls a component whose instances answer
// /healthz on their ports (controller-managers, schedulers, cloud
// controller managers) to its specs; it is done when they all run them
// and one is healthy.
func (b *Backend) ensureHealthzComponent(ctx context.Context, spec controlplane.Spec, l Layout, p pki.ClusterPKI,
	component string, specs []supervisor.Spec, ports []int) (bool, string, error) {
	probe := func(ctx context.Context) []controlplane.ComponentHealth {
		return b.healthzAll(ctx, component, ports, p)
	}
	current, msg, err := b.rollout(ctx, component, specs, probe, b.gate(spec, l, p, component), nil)
	if err != nil || !current {
		return false, msg, err
	}
	health := probe(ctx)
	return anyHealthy(health), describeUnhealthy(health), nil
}

func (b *Backend) schedulerSpecs(spec controlplane.Spec, l Layout, p pki.ClusterPKI) []supervisor.Spec {
	kubeconfig := p.Kubeconfig(pki.SchedulerName)
	specs := make([]supervisor.Spec, 0, len(l.Scheduler))
	for i, port := range l.Scheduler {
		specs = append(specs, supervisor.Spec{
			Name: processName(spec.Key, CompScheduler, i),
			Path: spec.Binaries.Path("kube-scheduler"),
			Args: []string{
				"--kubeconfig=" + kubeconfig,
				"--authentication-kubeconfig=" + kubeconfig,
				"--authorization-kubeconfig=" + kubeconfig,
				"--bind-address=127.0.0.1",
				fmt.Sprintf("--secure-port=%d", port),
				"--tls-cert-file=" + p.Cert(pki.SchedulerServing),
				"--tls-private-key-file=" + p.Key(pki.SchedulerServing),
				"--client-ca-file=" + p.TrustBundle(),
				"--requestheader-client-ca-file=" + p.Cert(pki.FrontProxyCAName),
				"--profiling=false",
				fmt.Sprintf("--leader-elect=%t", spec.HighAvailability),
			},
			LogFile: b.logFile(spec.Key, CompScheduler, i),
			Tier:    3,
		})
	}
	return withCredentials(p, specs)
}

func (b *Backend) ensureSchedulers(ctx context.Context, spec controlplane.Spec, l Layout, p pki.ClusterPKI) (bool, string, error) {
	return b.ensureHealthzComponent(ctx, spec, l, p, CompScheduler, b.schedulerSpecs(spec, l, p), l.Scheduler)
}

// NodeEndpointSpec is the process that serves the API on the gateway of
// the nodes network, forwarding to the API servers on loopback.
func (b *Backend) nodeEndpointSpec(spec controlplane.Spec, l Layout, p pki.ClusterPKI) supervisor.Spec {
	return b.proxySpec(spec.Key, "node-endpoint", strings.TrimPrefix(l.NodeEndpoint(), "https://"), l.APIServer, p.TrustBundle())
}

// NodeAccess reads where machines reach the control plane from its layout.
func (b *Backend) NodeAccess(spec controlplane.Spec) (controlplane.NodeAccess, error) {
	l, err := b.LoadLayout(spec.Key)
	if err != nil {
		return controlplane.NodeAccess{}, err
	}
	a := controlplane.NodeAccess{NodesCIDR: l.NodesCIDR, Gateway: l.Gateway(), APIServer: l.NodeEndpoint()}
	if _, err := fmt.Sscanf(a.APIServer[strings.LastIndex(a.APIServer, ":")+1:], "%d", &a.APIPort); err != nil {
		return a, fmt.Errorf("node endpoint %q: %w", a.APIServer, err)
	}
	if l.Tunnel != nil {
		a.TunnelPort, a.TunnelServers = l.Tunnel.Node, len(l.Tunnel.Agent)
	}
	return a, nil
}

// EnsureNodeAccess runs the node endpoint and the tunnel endpoint on the
// gateway (the address must exist).
func (b *Backend) EnsureNodeAccess(spec controlplane.Spec) (controlplane.NodeAccess, error) {
	a, err := b.NodeAccess(spec)
	if err != nil {
		return a, err
	}
	l, err := b.LoadLayout(spec.Key)
	if err != nil {
		return a, err
	}
	if err := b.Supervisor.Ensure(b.nodeEndpointSpec(spec, l, b.PKI(spec.Key))); err != nil {
		return a, err
	}
	if l.Tunnel != nil {
		if err := b.Supervisor.Ensure(b.tunnelEndpointSpec(spec, l)); err != nil {
			return a, err
		}
	}
	return a, nil
}
