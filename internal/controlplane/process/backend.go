// Package process is the embedded control-plane backend: each cluster's etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler run as
// supervised processes on this host, with their own data, log and PKI
// directories under the state directory and ports allocated once and kept.
package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/ports"
	"github.com/lotse/lotse/internal/supervisor"
	"github.com/lotse/lotse/internal/tasks"
)

// Backend runs control planes as supervised processes.
type Backend struct {
	// StateDir holds one directory per control plane (by key).
	StateDir string
	// Supervisor starts, restarts and adopts the processes.
	Supervisor *supervisor.Supervisor
	// LotseBinary runs the load balancer of HA control planes
	// (`lotse loadbalancer`); defaults to the running executable.
	LotseBinary string
	// APIServerGOGC, when positive, is the API servers' GOGC: 50 saves
	// about 38 MiB of an idle API server's 280 MiB and costs about 0.6 s
	// of cluster creation (docs/benchmarks.md, "Idle RSS"); 0 keeps Go's
	// default (100).
	APIServerGOGC int
	// onReady (SetOnReady) is told when a starting API server is ready.
	onReady atomic.Pointer[func(key string)]
	// readinessWatches: key -> its running *readinessWatch.
	readinessWatches sync.Map
	// locks serialises the operations that stop, restart or swap a
	// control plane's processes and data (per key): a care restart must
	// not start a member in the middle of a restore's swap.
	locks sync.Map
	// datastoreAuthOn: the shared datastore's authentication was found
	// on (it never goes off again), so its check is skipped.
	datastoreAuthOn atomic.Bool
}

// lock takes a control plane's operation lock.
func (b *Backend) lock(key string) func() {
	m, _ := b.locks.LoadOrStore(key, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

var _ controlplane.Backend = (*Backend)(nil)

// New returns a process backend.
func New(stateDir string, sup *supervisor.Supervisor) *Backend {
	self, _ := os.Executable()
	return &Backend{StateDir: stateDir, Supervisor: sup, LotseBinary: self}
}

// Task names, in the order they usually complete.
const (
	TaskPorts             = "ports"
	TaskPKI               = "pki"
	TaskEtcd              = "etcd"
	TaskAPIServer         = "kube-apiserver"
	TaskLoadBalancer      = "load-balancer"
	TaskControllerManager = "kube-controller-manager"
	TaskScheduler         = "kube-scheduler"
	TaskTunnel            = "konnectivity-server"
	TaskCloudController   = "cloud-controller-manager"
)

// Layout is what a control plane keeps stable across restarts: its ports.
type Layout struct {
	EtcdClient []int `json:"etcdClient"`
	EtcdPeer   []int `json:"etcdPeer"`
	// EtcdHTTP are the members' ports for HTTP (health, metrics), apart
	// from the gRPC client ports: etcd stops a gRPC-only listener
	// gracefully (in-flight requests finish, clients move to another
	// member), but kills the requests of a shared TLS listener at once.
	EtcdHTTP          []int `json:"etcdHTTP,omitempty"`
	APIServer         []int `json:"apiServer"`
	ControllerManager []int `json:"controllerManager"`
	Scheduler         []int `json:"scheduler"`
	// CloudController are the secure (health) ports of the cloud
	// controller managers, one beside each controller-manager; allocated
	// whether or not the spec runs them.
	CloudController []int `json:"cloudController,omitempty"`
	// LoadBalancer is the port of the HA endpoint (0 without HA).
	LoadBalancer int `json:"loadBalancer,omitempty"`
	// NodesCIDR is the network of the cluster's machines; its first
	// address (the gateway) is where nodes and pods reach the API.
	NodesCIDR string `json:"nodesCIDR,omitempty"`
	// Tunnel holds the ports of the konnectivity servers, one beside each
	// API server (empty for a control plane without a tunnel).
	Tunnel *TunnelPorts `json:"tunnel,omitempty"`
	// EtcdJoin records, per member index, how a member that did not
	// start with the cluster joined it (a single-replica control plane
	// made highly available): the member list it joined. Its flags keep
	// saying so, so its process spec never changes afterwards.
	EtcdJoin map[int]EtcdJoin `json:"etcdJoin,omitempty"`
	// EtcdPending lists the members still to be added, in order.
	EtcdPending []int `json:"etcdPending,omitempty"`
	// SharedDatastore: the data is in the shared datastore, and the
	// control plane has no etcd members of its own.
	SharedDatastore bool `json:"sharedDatastore,omitempty"`
	// DatastoreUser is the control plane's etcd user (and role) in the
	// shared datastore.
	DatastoreUser string `json:"datastoreUser,omitempty"`
}

// errDatastoreSwitch refuses to move a control plane's data between its
// own etcd and the shared datastore in place.
func errDatastoreSwitch(shared bool) error {
	from, to := "dedicated", "shared"
	if shared {
		from, to = to, from
	}
	return fmt.Errorf("the control plane's datastore is %s and cannot become %s in place; create a new cluster with the datastore you want", from, to)
}

// EtcdJoin is how a member was started the first time.
type EtcdJoin struct {
	// InitialCluster is the --initial-cluster it started with.
	InitialCluster string `json:"initialCluster"`
	// State is "new" (it started the cluster) or "existing".
	State string `json:"state"`
}

// etcdMembers are the indexes of the members that are part of the
// cluster (all but those still pending).
func (l Layout) etcdMembers() []int {
	var out []int
next:
	for i := range l.EtcdClient {
		for _, p := range l.EtcdPending {
			if p == i {
				continue next
			}
		}
		out = append(out, i)
	}
	return out
}

// TunnelPorts are the loopback ports of the konnectivity servers, below the
// ephemeral range as konnectivity requires, and the port agents dial on the
// gateway (a load balancer in front of every server's agent port).
type TunnelPorts struct {
	Agent  []int `json:"agent"`
	Admin  []int `json:"admin"`
	Health []int `json:"health"`
	Node   int   `json:"node"`
}

// Gateway is the first address of the nodes network.
func (l Layout) Gateway() string {
	p, err := netip.ParsePrefix(l.NodesCIDR)
	if err != nil {
		return ""
	}
	return p.Masked().Addr().Next().String()
}

// NodeEndpoint is the API URL for nodes and pods: the gateway, on the
// same port as the host endpoint.
func (l Layout) NodeEndpoint() string {
	gw := l.Gateway()
	if gw == "" {
		return ""
	}
	ep := l.Endpoint()
	return "https://" + gw + ":" + ep[strings.LastIndex(ep, ":")+1:]
}

// Endpoint is the API URL clients use.
func (l Layout) Endpoint() string {
	if l.LoadBalancer != 0 {
		return fmt.Sprintf("https://127.0.0.1:%d", l.LoadBalancer)
	}
	if len(l.APIServer) == 0 {
		return ""
	}
	return fmt.Sprintf("https://127.0.0.1:%d", l.APIServer[0])
}

func (l Layout) etcdClientURLs() []string {
	out := make([]string, len(l.EtcdClient))
	for i, p := range l.EtcdClient {
		out[i] = fmt.Sprintf("https://127.0.0.1:%d", p)
	}
	return out
}

func replicas(spec controlplane.Spec) (etcd, apiservers, controllers int) {
	if spec.HighAvailability {
		return 3, 2, 2
	}
	return 1, 1, 1
}

// Dir is the directory of a control plane.
func (b *Backend) Dir(key string) string {
	return filepath.Join(b.StateDir, filepath.FromSlash(key))
}

// PKI returns the PKI files of a control plane.
func (b *Backend) PKI(key string) pki.ClusterPKI {
	return pki.ClusterPKI{Dir: filepath.Join(b.Dir(key), "pki")}
}

func (b *Backend) layoutPath(key string) string { return filepath.Join(b.Dir(key), "ports.json") }

// LoadLayout reads the recorded ports of a control plane.
func (b *Backend) LoadLayout(key string) (Layout, error) {
	var l Layout
	data, err := os.ReadFile(b.layoutPath(key))
	if err != nil {
		return l, err
	}
	return l, json.Unmarshal(data, &l)
}

var layoutMu sync.Mutex

// ensureLayout allocates ports once; later calls return what was recorded.
func (b *Backend) ensureLayout(spec controlplane.Spec) (Layout, error) {
	layoutMu.Lock()
	defer layoutMu.Unlock()
	if l, err := b.LoadLayout(spec.Key); err == nil {
		if l.SharedDatastore != spec.SharedDatastore {
			return l, errDatastoreSwitch(l.SharedDatastore)
		}
		// Layouts written by older versions lack what came later: add it.
		changed := false
		if l.NodesCIDR == "" {
			if l.NodesCIDR, err = b.allocateNodesCIDR(spec); err != nil {
				return l, err
			}
			changed = true
		}
		if len(l.EtcdHTTP) < len(l.EtcdClient) {
			p, err := ports.Allocate(len(l.EtcdClient) - len(l.EtcdHTTP))
			if err != nil {
				return l, err
			}
			l.EtcdHTTP = append(l.EtcdHTTP, p...)
			changed = true
		}
		if l.Tunnel == nil && !spec.WithoutTunnel {
			if l.Tunnel, err = allocateTunnel(len(l.APIServer)); err != nil {
				return l, err
			}
			changed = true
		}
		switch {
		case spec.HighAvailability && l.LoadBalancer == 0:
			if err := growToHA(&l); err != nil {
				return l, err
			}
			changed = true
		case !spec.HighAvailability && l.LoadBalancer != 0:
			return l, fmt.Errorf("a highly available control plane cannot become a single-replica one; create a new cluster")
		}
		if grown, err := allocateCloudControllers(&l); err != nil {
			return l, err
		} else if grown {
			changed = true
		}
		if !changed {
			return l, nil
		}
		return l, b.saveLayout(spec.Key, l)
	} else if !errors.Is(err, os.ErrNotExist) {
		return l, fmt.Errorf("read %s: %w", b.layoutPath(spec.Key), err)
	}
	etcdN, apiN, ctlN := replicas(spec)
	if spec.SharedDatastore {
		etcdN = 0
	}
	n := 3*etcdN + apiN + 2*ctlN
	if spec.HighAvailability {
		n++
	}
	p, err := ports.Allocate(n)
	if err != nil {
		return Layout{}, err
	}
	take := func(k int) []int { out := p[:k:k]; p = p[k:]; return out }
	l := Layout{
		EtcdClient:        take(etcdN),
		EtcdPeer:          take(etcdN),
		EtcdHTTP:          take(etcdN),
		APIServer:         take(apiN),
		ControllerManager: take(ctlN),
		Scheduler:         take(ctlN),
		SharedDatastore:   spec.SharedDatastore,
	}
	if spec.SharedDatastore {
		if l.DatastoreUser, err = newDatastoreUser(spec.Key); err != nil {
			return l, err
		}
	}
	if spec.HighAvailability {
		l.LoadBalancer = take(1)[0]
	}
	if l.NodesCIDR, err = b.allocateNodesCIDR(spec); err != nil {
		return l, err
	}
	if !spec.WithoutTunnel {
		if l.Tunnel, err = allocateTunnel(apiN); err != nil {
			return l, err
		}
	}
	if _, err := allocateCloudControllers(&l); err != nil {
		return l, err
	}
	return l, b.saveLayout(spec.Key, l)
}

// allocateCloudControllers gives every controller-manager a cloud
// controller manager's port beside it (a new layout, one made highly
// available, or one from before cloud controller managers ran as
// processes); it reports whether it added any.
func allocateCloudControllers(l *Layout) (bool, error) {
	missing := len(l.ControllerManager) - len(l.CloudController)
	if missing <= 0 {
		return false, nil
	}
	p, err := ports.Allocate(missing)
	if err != nil {
		return false, err
	}
	l.CloudController = append(l.CloudController, p...)
	return true, nil
}

// growToHA turns a single-replica layout into a highly available one
// without changing the endpoint: the load balancer takes over the API
// server's port (so every kubeconfig and every node keeps working), both
// API servers get new ports, and two etcd members are to be added to the
// one that holds the data.
func growToHA(l *Layout) error {
	if l.SharedDatastore {
		return growAPIServersToHA(l)
	}
	if len(l.EtcdClient) != 1 || len(l.APIServer) != 1 {
		return fmt.Errorf("layout has %d etcd members and %d API servers; cannot make it highly available", len(l.EtcdClient), len(l.APIServer))
	}
	p, err := ports.Allocate(3*2 + 2 + 1 + 1)
	if err != nil {
		return err
	}
	l.EtcdJoin = map[int]EtcdJoin{0: {InitialCluster: fmt.Sprintf("etcd-0=https://127.0.0.1:%d", l.EtcdPeer[0]), State: "new"}}
	l.EtcdClient = append(l.EtcdClient, p[0], p[1])
	l.EtcdPeer = append(l.EtcdPeer, p[2], p[3])
	l.EtcdHTTP = append(l.EtcdHTTP, p[8], p[9])
	l.EtcdPending = []int{1, 2}
	l.LoadBalancer = l.APIServer[0]
	l.APIServer = []int{p[4], p[5]}
	l.ControllerManager = append(l.ControllerManager, p[6])
	l.Scheduler = append(l.Scheduler, p[7])
	return growTunnel(l)
}

// growAPIServersToHA is growToHA for a control plane on the shared
// datastore: the API servers, controller-managers and schedulers double,
// the data stays where it is.
func growAPIServersToHA(l *Layout) error {
	if len(l.APIServer) != 1 {
		return fmt.Errorf("layout has %d API servers; cannot make it highly available", len(l.APIServer))
	}
	p, err := ports.Allocate(2 + 1 + 1)
	if err != nil {
		return err
	}
	l.LoadBalancer = l.APIServer[0]
	l.APIServer = []int{p[0], p[1]}
	l.ControllerManager = append(l.ControllerManager, p[2])
	l.Scheduler = append(l.Scheduler, p[3])
	return growTunnel(l)
}

// growTunnel adds a tunnel server for the second API server.
func growTunnel(l *Layout) error {
	if l.Tunnel == nil {
		return nil
	}
	t, err := ports.AllocateRegistered(3)
	if err != nil {
		return err
	}
	l.Tunnel.Agent = append(l.Tunnel.Agent, t[0])
	l.Tunnel.Admin = append(l.Tunnel.Admin, t[1])
	l.Tunnel.Health = append(l.Tunnel.Health, t[2])
	return nil
}

func allocateTunnel(servers int) (*TunnelPorts, error) {
	p, err := ports.AllocateRegistered(3*servers + 1)
	if err != nil {
		return nil, err
	}
	return &TunnelPorts{Agent: p[:servers], Admin: p[servers : 2*servers], Health: p[2*servers : 3*servers], Node: p[3*servers]}, nil
}

func (b *Backend) saveLayout(key string, l Layout) error {
	data, _ := json.MarshalIndent(l, "", "  ")
	return fsutil.WriteFileAtomic(b.layoutPath(key), data, 0o600)
}

// allocateNodesCIDR returns the spec's nodes network, or the first /24 of
// 10.250.0.0/16 that no other control plane of this backend uses. Node
// networks must differ between clusters because their gateways all live in
// the host's network namespace.
// layoutFiles are the files, in a control plane's directory, that record
// its nodes network (field nodesCIDR): this backend's ports.json and the
// seed backend's seed.json, which shares the state directory.
var layoutFiles = []string{"ports.json", "seed.json"}

// AllocateNodesCIDR picks the nodes network of a control plane another
// backend hosts under the same state directory, so that no two clusters'
// machines share one, and hands it to record (which writes the other
// backend's layout) while no other allocation runs.
func (b *Backend) AllocateNodesCIDR(spec controlplane.Spec, record func(cidr string) error) error {
	layoutMu.Lock()
	defer layoutMu.Unlock()
	cidr, err := b.allocateNodesCIDR(spec)
	if err != nil {
		return err
	}
	return record(cidr)
}

func (b *Backend) allocateNodesCIDR(spec controlplane.Spec) (string, error) {
	used := map[string]bool{}
	var layouts []string
	for _, name := range layoutFiles {
		found, _ := filepath.Glob(filepath.Join(b.StateDir, "clusters", "*", "*", name))
		layouts = append(layouts, found...)
	}
	layouts = append(layouts, filepath.Join(b.StateDir, "management", "ports.json"))
	for _, f := range layouts {
		if filepath.Dir(f) == b.Dir(spec.Key) {
			continue
		}
		var other Layout
		if data, err := os.ReadFile(f); err == nil && json.Unmarshal(data, &other) == nil && other.NodesCIDR != "" {
			used[other.NodesCIDR] = true
		}
	}
	if spec.NodesCIDR != "" {
		want, err := netip.ParsePrefix(spec.NodesCIDR)
		if err != nil {
			return "", err
		}
		for _, h := range hostPrefixes() {
			if h.Overlaps(want) {
				return "", fmt.Errorf("nodes network %s overlaps %s, a network of this host; choose another spec.networking.nodes", spec.NodesCIDR, h)
			}
		}
		for u := range used {
			if p, err := netip.ParsePrefix(u); err == nil && p.Overlaps(want) {
				return "", fmt.Errorf("nodes network %s overlaps %s of another cluster on this host; choose another spec.networking.nodes", spec.NodesCIDR, u)
			}
		}
		return want.Masked().String(), nil
	}
	taken := hostPrefixes()
	for u := range used {
		if p, err := netip.ParsePrefix(u); err == nil {
			taken = append(taken, p)
		}
	}
next:
	for i := 0; i < 256; i++ {
		c := netip.MustParsePrefix(fmt.Sprintf("10.250.%d.0/24", i))
		for _, t := range taken {
			if t.Overlaps(c) {
				continue next
			}
		}
		return c.String(), nil
	}
	return "", fmt.Errorf("no free /24 left in 10.250.0.0/16 for nodes networks")
}

// Tasks returns the graph that brings a control plane to spec.
func (b *Backend) Tasks(spec controlplane.Spec) []tasks.Task {
	var layout Layout
	var clusterPKI pki.ClusterPKI
	endpointTask := TaskAPIServer
	if spec.HighAvailability {
		endpointTask = TaskLoadBalancer
	}
	ts := []tasks.Task{
		{Name: TaskPorts, Run: func(context.Context) (bool, string, error) {
			if spec.SharedDatastore {
				// The API servers' flags name the datastore's port.
				if _, err := b.ensureDatastoreLayout(); err != nil {
					return false, "", err
				}
			}
			l, err := b.ensureLayout(spec)
			layout = l
			return err == nil, "", err
		}},
		{Name: TaskPKI, DependsOn: []string{TaskPorts}, Run: func(context.Context) (bool, string, error) {
			p, err := b.ensurePKI(spec, layout)
			clusterPKI = p
			return err == nil, "", err
		}},
		{Name: TaskEtcd, DependsOn: []string{TaskPKI}, Run: func(ctx context.Context) (bool, string, error) {
			return b.ensureEtcd(ctx, spec, layout, clusterPKI)
		}},
		// The API servers start together with etcd (they retry until it
		// answers) and count as done once /readyz passes, which needs etcd:
		// that saves the time etcd takes to become healthy. On the shared
		// datastore they wait for the cluster's etcd user and certificate
		// instead (the datastore itself is running already, but for the
		// first cluster).
		{Name: TaskAPIServer, DependsOn: []string{apiServerAfter(spec)}, Run: func(ctx context.Context) (bool, string, error) {
			return b.ensureAPIServers(ctx, spec, layout, clusterPKI)
		}},
	}
	if !spec.WithoutTunnel {
		// Beside the API servers, which dial it only when a request
		// needs the cluster's network.
		ts = append(ts, tasks.Task{Name: TaskTunnel, DependsOn: []string{TaskPKI}, Run: func(ctx context.Context) (bool, string, error) {
			return b.ensureTunnelServers(ctx, spec, layout, clusterPKI)
		}})
	}
	if spec.HighAvailability {
		ts = append(ts, tasks.Task{Name: TaskLoadBalancer, DependsOn: []string{TaskPKI}, Run: func(ctx context.Context) (bool, string, error) {
			return b.ensureLoadBalancer(ctx, spec, layout, clusterPKI)
		}})
	}
	ts = append(ts, tasks.Task{Name: TaskControllerManager, DependsOn: []string{endpointTask}, Run: func(ctx context.Context) (bool, string, error) {
		return b.ensureControllerManagers(ctx, spec, layout, clusterPKI)
	}})
	if !spec.WithoutScheduler {
		ts = append(ts, tasks.Task{Name: TaskScheduler, DependsOn: []string{endpointTask}, Run: func(ctx context.Context) (bool, string, error) {
			return b.ensureSchedulers(ctx, spec, layout, clusterPKI)
		}})
	}
	if spec.CloudController != nil {
		ts = append(ts, tasks.Task{Name: TaskCloudController, DependsOn: []string{endpointTask}, Run: func(ctx context.Context) (bool, string, error) {
			return b.ensureCloudControllers(ctx, spec, layout, clusterPKI)
		}})
	}
	return ts
}

func apiServerAfter(spec controlplane.Spec) string {
	if spec.SharedDatastore {
		return TaskEtcd
	}
	return TaskPKI
}

// EndpointTask is the task after which the API endpoint answers.
func EndpointTask(spec controlplane.Spec) string {
	if spec.HighAvailability {
		return TaskLoadBalancer
	}
	return TaskAPIServer
}

func (b *Backend) ensurePKI(spec controlplane.Spec, layout Layout) (pki.ClusterPKI, error) {
	p, err := pki.EnsureCluster(b.PKI(spec.Key).Dir, pki.ClusterParams{
		Name:                   spec.Name,
		APIServerHosts:         []string{layout.Gateway()},
		ServiceCIDR:            spec.ServiceCIDR,
		EncryptionProvider:     spec.EncryptionProvider,
		EncryptedResources:     spec.EncryptedResources,
		ServiceAccountKeyStage: spec.Rotation.ServiceAccountKey,
		EncryptionKeyStage:     spec.Rotation.EncryptionKey,
		CAStage:                spec.Rotation.CA,
	})
	if err != nil {
		return p, err
	}
	endpoint := layout.Endpoint()
	for _, name := range []string{pki.AdminName, pki.ControllerMgrName, pki.SchedulerName, pki.CloudControllerName} {
		if err := p.WriteKubeconfig(spec.Name, name, endpoint); err != nil {
			return p, err
		}
	}
	return p, nil
}

// AdminKubeconfig returns the cluster-admin kubeconfig.
func (b *Backend) AdminKubeconfig(spec controlplane.Spec) ([]byte, error) {
	return os.ReadFile(b.PKI(spec.Key).Kubeconfig(pki.AdminName))
}

// processName is the supervisor name of a component instance.
func processName(key, component string, i int) string {
	return fmt.Sprintf("%s/%s-%d", key, component, i)
}

func (b *Backend) logFile(key, component string, i int) string {
	return filepath.Join(b.Dir(key), "logs", fmt.Sprintf("%s-%d.log", component, i))
}

// Delete stops every process of the control plane and removes its directory.
func (b *Backend) Delete(ctx context.Context, key string) error {
	b.endReadinessWatch(key)
	defer b.lock(key)()
	// The data goes next, so there is nothing to shut down gracefully for.
	b.Supervisor.KillPrefix(key + "/")
	if err := supervisor.WaitStopped(ctx, b.Supervisor.Owner(), key+"/"); err != nil {
		return err
	}
	if l, err := b.LoadLayout(key); err == nil && l.SharedDatastore {
		// The directory (with the layout that says so) goes only once
		// the data is gone, so a failed attempt is tried again.
		if err := b.deleteDatastoreTenant(ctx, key, l); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(b.Dir(key)); err != nil {
		return fmt.Errorf("remove %s: %w", b.Dir(key), err)
	}
	b.removeTunnelSockets(key)
	// Remove now-empty parents (e.g. the namespace directory), but never the state dir.
	for d := filepath.Dir(b.Dir(key)); strings.HasPrefix(d, b.StateDir+string(filepath.Separator)); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break
		}
	}
	return nil
}

// Stop stops the processes of a control plane and keeps its data.
func (b *Backend) Stop(ctx context.Context, key string) error {
	b.endReadinessWatch(key)
	defer b.lock(key)()
	return b.stop(ctx, key)
}

func (b *Backend) stop(ctx context.Context, key string) error {
	b.Supervisor.StopPrefix(key + "/")
	return supervisor.WaitStopped(ctx, b.Supervisor.Owner(), key+"/")
}

// hostPrefixes are the networks of this host's interfaces (other lotse
// instances' node networks among them), which a new nodes network must not
// overlap.
func hostPrefixes() []netip.Prefix {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() {
			out = append(out, p.Masked())
		}
	}
	return out
}
