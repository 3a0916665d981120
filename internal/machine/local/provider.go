// Package local is the machine provider that makes a machine out of this
// host: a network namespace on the cluster's bridge with its own containerd
// (Debian's containerd, runc and CNI plugins), and the kubelet and
// kube-proxy of the cluster's release, all supervised processes confined to
// a cgroup of their own.
package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/lotse/lotse/internal/cloudprovider"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/hostlimits"
	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/machine"
	"github.com/lotse/lotse/internal/netns"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/supervisor"
)

// Machine is everything the provider needs to run one machine: the
// controllers' machine.Spec plus where this host keeps it.
type Machine struct {
	machine.Spec
	// Dir is the machine's directory (under the cluster's).
	Dir string
	// DiskDir is the kubelet's root directory: the machine's "disk". It
	// needs a short path because the kubelet creates unix sockets inside
	// it, whose paths may not exceed 108 bytes.
	DiskDir string
	Network Network
}

func (m *Machine) path(parts ...string) string {
	return filepath.Join(append([]string{m.Dir}, parts...)...)
}

// runDir holds sockets and runtime state; short, because socket paths are
// limited to 108 bytes.
func (m *Machine) runDir() string {
	return filepath.Join("/run/lotse", fmt.Sprintf("%s-%d", m.Network.ID, m.Index))
}

func (m *Machine) runPath(name string) string { return filepath.Join(m.runDir(), name) }

// Socket is the machine's containerd socket.
func (m *Machine) Socket() string { return m.runPath("containerd.sock") }

// ProviderID identifies the machine, as the cloud provider names it.
func (m *Machine) ProviderID() string {
	return cloudprovider.ProviderID(m.Cluster, m.Name)
}

func (m *Machine) cgroupRoot() string { return fmt.Sprintf("/lotse-%s-%d", m.Network.ID, m.Index) }

func (m *Machine) processPrefix() string { return m.Cluster.Key() + "/machines/" + m.Name + "/" }

// Provider runs local machines.
type Provider struct {
	Supervisor *supervisor.Supervisor
	// StateDir is the state directory shared with the process backend:
	// machines live under STATE/clusters/<ns>/<name>/machines/<machine>,
	// the seeds of their images under STATE/image-seeds.
	StateDir string

	seedsOnce  sync.Once
	imageSeeds *seeds

	// networks remembers, by namespace, when a cluster's network (its
	// switch, uplink and host firewall) or a machine's (namespace, link,
	// address, route, masquerade and egress policy) was last ensured as
	// configured, so that the reconciles of a starting cluster or machine
	// (several a second) do not run dozens of ip and iptables commands
	// each time.
	networks sync.Map // string -> ensuredNetwork
}

// ensuredNetwork is a cluster's or a machine's network, ensured for a
// configuration at a time (ip: the machine's address; zero for a cluster).
type ensuredNetwork struct {
	config string
	inode  uint64 // of the namespace: a namespace made again is ensured again
	at     time.Time
	ip     netip.Addr
}

// networkRecheck is how long an ensured network counts as in place
// before it is checked again, command by command.
const networkRecheck = 10 * time.Second

var _ machine.Provider = (*Provider)(nil)

// Network returns the network of a cluster's machines; the CIDR may be
// empty when only the names are needed (deletion).
func (p *Provider) Network(cluster clusterref.Ref, cidr string) (Network, error) {
	id := NetworkID(p.Supervisor.Owner(), cluster.Key())
	if cidr == "" {
		return Network{ID: id}, nil
	}
	return ParseNetwork(id, cidr)
}

// EnsureNetwork creates the cluster's switch, uplink and host firewall
// (unless that was done for the same configuration and switch namespace
// within networkRecheck: clusters are reconciled many times a
// second while they start, and this takes dozens of ip and iptables
// commands).
func (p *Provider) EnsureNetwork(ctx context.Context, cluster clusterref.Ref, spec machine.NetworkSpec) error {
	n, err := p.Network(cluster, spec.CIDR)
	if err != nil {
		return err
	}
	sw := n.SwitchNS()
	config := fmt.Sprintf("%s %v %s %s", spec.CIDR, spec.GatewayPorts, spec.Pods, spec.Services)
	if _, ok := p.networkEnsured(sw, config); ok {
		return nil
	}
	if err := n.EnsureCluster(ctx, ClusterRanges{GatewayPorts: spec.GatewayPorts, Pods: spec.Pods, Services: spec.Services}); err != nil {
		return err
	}
	p.networks.Store(sw, ensuredNetwork{config: config, inode: namespaceInode(sw), at: time.Now()})
	return nil
}

// networkEnsured returns the record of the network in namespace ns if it
// was ensured for config within networkRecheck, and forgets it otherwise.
func (p *Provider) networkEnsured(ns, config string) (ensuredNetwork, bool) {
	if v, ok := p.networks.Load(ns); ok {
		e := v.(ensuredNetwork)
		if e.config == config && e.inode != 0 && e.inode == namespaceInode(ns) && time.Since(e.at) < networkRecheck {
			return e, true
		}
	}
	p.networks.Delete(ns)
	return ensuredNetwork{}, false
}

// RoutePodRange routes podCIDR via a node's address inside machine index.
func (p *Provider) RoutePodRange(ctx context.Context, cluster clusterref.Ref, index int, podCIDR, via string) error {
	n, _ := p.Network(cluster, "")
	ns := n.MachineNS(index)
	if !netns.Exists(ns) {
		return nil
	}
	return netns.ReplaceRoute(ctx, ns, podCIDR, via, "")
}

// DeleteNetwork sweeps whatever the cluster's machines left on the host,
// then the switch and the uplink.
func (p *Provider) DeleteNetwork(ctx context.Context, cluster clusterref.Ref) error {
	n, _ := p.Network(cluster, "")
	// Namespaces made again get checked in full (their inode numbers may
	// be reused).
	p.networks.Range(func(k, _ any) bool {
		if strings.Contains(k.(string), n.ID) {
			p.networks.Delete(k)
		}
		return true
	})
	return DeleteLeftovers(ctx, filepath.Join(p.StateDir, filepath.FromSlash(cluster.Key())), DiskRoot(p.StateDir), n.ID)
}

// machine places a spec on this host.
func (p *Provider) machine(s *machine.Spec) (*Machine, error) {
	n, err := p.Network(s.Cluster, s.NodesCIDR)
	if err != nil {
		return nil, err
	}
	return &Machine{
		Spec:    *s,
		Dir:     filepath.Join(p.StateDir, filepath.FromSlash(s.Cluster.Key()), "machines", s.Name),
		DiskDir: DiskDir(DiskRoot(p.StateDir), n.ID, s.Index),
		Network: n,
	}, nil
}

// Ensure creates or repairs a machine. It is idempotent.
func (p *Provider) Ensure(ctx context.Context, s *machine.Spec) (machine.Status, error) {
	m, err := p.machine(s)
	if err != nil {
		return machine.Status{}, err
	}
	st, err := p.ensure(ctx, m)
	st.HasServingCertificate = exists(m.path("pki", "kubelet-server-current.pem"))
	return st, err
}

// Delete stops a machine and removes everything of it.
func (p *Provider) Delete(ctx context.Context, s *machine.Spec) error {
	m, err := p.machine(s)
	if err != nil {
		return err
	}
	p.networks.Delete(m.Network.MachineNS(m.Index))
	return p.delete(ctx, m)
}

// Stop ends a machine's processes and containers (by its cgroup, as a
// power-off would) and keeps its disk, directories and network namespace.
func (p *Provider) Stop(ctx context.Context, s *machine.Spec) error {
	m, err := p.machine(s)
	if err != nil {
		return err
	}
	prefix := m.processPrefix()
	p.Supervisor.StopPrefix(prefix)
	if err := killCgroup(m.cgroupRoot()); err != nil {
		return err
	}
	if err := supervisor.WaitStopped(ctx, p.Supervisor.Owner(), prefix); err != nil {
		return err
	}
	// A killed containerd leaves its socket; the next start waits for the
	// new one, not the dead one.
	if err := os.Remove(m.Socket()); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

func (p *Provider) ensure(ctx context.Context, m *Machine) (machine.Status, error) {
	st := machine.Status{ProviderID: m.ProviderID(), LocalVolumesPath: filepath.Join(m.DiskDir, "local-volumes")}
	ip, err := p.ensureMachineNetwork(ctx, m)
	if err != nil {
		return st, err
	}
	st.Address = ip.String()
	for _, d := range []string{m.path("containerd"), m.path("cni", "net.d"), m.DiskDir, m.path("pod-logs"), m.path("logs"), m.path("pki"), m.runDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return st, err
		}
	}
	if err := ensureCgroup(m.cgroupRoot()); err != nil {
		return st, fmt.Errorf("cgroup: %w", err)
	}
	if err := limitCgroup(m.cgroupRoot(), m.Class); err != nil {
		return st, fmt.Errorf("cgroup limits of class %s: %w", m.Class.Name, err)
	}
	if err := writeIfChanged(m.path(cgroupFile), m.cgroupRoot()+"\n"); err != nil {
		return st, err
	}
	// The trust bundle is the control plane's file; a cluster from before
	// it existed gets it here if its control plane has not written it yet.
	if err := m.PKI.EnsureTrustBundle(); err != nil {
		return st, fmt.Errorf("trust bundle: %w", err)
	}
	files := map[string]string{
		"containerd.toml": containerdConfig(m),
		"kubelet.yaml":    kubeletConfig(m),
		"kube-proxy.yaml": kubeProxyConfig(m),
		// Pods with dnsPolicy Default get this, not the host's resolv.conf:
		// no query may leave the machine.
		"resolv.conf": "# lotse: no upstream resolvers for local clusters\noptions ndots:1\n",
	}
	kp, err := m.PKI.KubeconfigFor("local", pki.KubeProxyName, m.APIServer)
	if err != nil {
		return st, err
	}
	files["kube-proxy.kubeconfig"] = string(kp)
	if m.BootstrapToken != "" {
		files["bootstrap.kubeconfig"] = bootstrapKubeconfig(m)
	}
	if m.PodCIDR != "" && m.BridgeCNI {
		files[filepath.Join("cni", "net.d", "10-lotse.conflist")] = cniConfig(m, m.PodCIDR)
	}
	for name, content := range files {
		if err := writeIfChanged(m.path(name), content); err != nil {
			return st, err
		}
	}

	if err := p.seedImages(ctx, m); err != nil {
		return st, err
	}
	// A containerd started without a free inotify instance runs without
	// its CRI plugin (see hostlimits); lotse up raises the limits, a
	// manager run elsewhere gets them raised here.
	if raised, err := hostlimits.Ensure(); err != nil {
		return st, err
	} else if len(raised) > 0 {
		log.FromContext(ctx).Info("raised host limits", "limits", raised)
	}
	if err := p.Supervisor.Ensure(p.spec(m, "containerd", "/usr/bin/containerd", "--config", m.path("containerd.toml"))); err != nil {
		return st, err
	}
	// containerd is up within a second or two; waiting here saves a
	// requeue round trip on every new machine.
	for deadline := time.Now().Add(3 * time.Second); !socketReady(m.Socket()) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if !socketReady(m.Socket()) {
		st.Message = "waiting for containerd"
		return st, nil
	}
	// The socket may be there before the CRI answers (containerd recovers
	// its containers first); a kubelet started then exits at once and
	// waits out its restart backoff. Only a kubelet about to start waits.
	if k, ok := p.Supervisor.Status(m.processPrefix() + "kubelet-0"); !ok || !k.Running {
		if err := criReady(ctx, m.Socket()); err != nil {
			st.Message = "waiting for containerd's CRI: " + err.Error()
			if status.Code(err) == codes.Unimplemented {
				// containerd runs without its CRI plugin: its log says why
				// (seen on first machines of a busy host, never on their
				// replacements), which the repair event then carries.
				if why := criLoadError(m.path("logs", "containerd.log")); why != "" {
					st.Message += "; containerd's log: " + why
				}
			}
			return st, nil
		}
	}
	if err := importImages(ctx, m); err != nil {
		return st, err
	}
	// Labels the kubelet may set on itself; the rest arrive through the API.
	labels := []string{}
	for k, v := range m.Labels {
		if kubeletMaySetLabel(k) {
			labels = append(labels, k+"="+v)
		}
	}
	sort.Strings(labels)
	kubeletArgs := []string{
		"--config=" + m.path("kubelet.yaml"),
		"--kubeconfig=" + m.path("kubelet.kubeconfig"),
		"--bootstrap-kubeconfig=" + m.path("bootstrap.kubeconfig"),
		"--cert-dir=" + m.path("pki"),
		"--root-dir=" + m.DiskDir,
		"--hostname-override=" + m.Name,
		"--node-ip=" + ip.String(),
		// Lotse's cloud controller manager gives the node its metadata
		// (and takes the uninitialized taint off).
		"--cloud-provider=external",
	}
	if len(labels) > 0 {
		kubeletArgs = append(kubeletArgs, "--node-labels="+strings.Join(labels, ","))
	}
	trust, kubeletTrust, err := ensureKubeletTrust(m, net.ParseIP(ip.String()))
	if err != nil {
		return st, fmt.Errorf("kubelet credentials: %w", err)
	}
	// The digests restart a process whose trust changed (a CA rotation):
	// neither the kubelet nor kube-proxy reads its kubeconfig again.
	kubelet := p.spec(m, "kubelet", m.Binaries.Path("kubelet"), kubeletArgs...)
	kubelet.Env = append(kubelet.Env, trustEnv+"="+kubeletTrust)
	if err := p.Supervisor.Ensure(kubelet); err != nil {
		return st, err
	}
	proxy := p.spec(m, "kube-proxy", m.Binaries.Path("kube-proxy"), "--config="+m.path("kube-proxy.yaml"))
	proxy.Env = append(proxy.Env, trustEnv+"="+digest(kp))
	if err := p.Supervisor.Ensure(proxy); err != nil {
		return st, err
	}
	st.TrustDigest = trust
	st.ProcessesReady = true
	for _, c := range []string{"containerd", "kubelet", "kube-proxy"} {
		if s, ok := p.Supervisor.Status(m.processPrefix() + c + "-0"); !ok || !s.Running {
			st.ProcessesReady = false
			st.Message = c + " is not running"
			if ok {
				// Why, for whoever reads the machine's condition.
				st.Message = fmt.Sprintf("%s is not running (restarts %d, last exit: %s)", c, s.Restarts, s.LastExit)
			}
		}
	}
	return st, nil
}

// spec runs a node process inside the machine's network namespace and cgroup.
func (p *Provider) spec(m *Machine, component, binary string, args ...string) supervisor.Spec {
	// The shell joins the cgroup first, so everything the process starts
	// (containerd's shims and containers) stays inside it and can be found
	// and stopped when the machine goes.
	script := `for d in /sys/fs/cgroup/*` + m.cgroupRoot() + `; do echo $$ > "$d/cgroup.procs" 2>/dev/null; done; exec nsenter --net=` +
		netns.Path(m.Network.MachineNS(m.Index)) + ` -- "$0" "$@"`
	tier := 4
	if component == "containerd" {
		tier = 3 // stops after kubelet and kube-proxy
	}
	return supervisor.Spec{
		Name:    m.processPrefix() + component + "-0",
		Path:    "/bin/sh",
		Args:    append([]string{"-c", script, binary}, args...),
		LogFile: m.path("logs", component+".log"),
		Tier:    tier,
	}
}

func bootstrapKubeconfig(m *Machine) string {
	ca, _ := os.ReadFile(m.PKI.TrustBundle())
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: kubelet-bootstrap
  user:
    token: %s
contexts:
- name: bootstrap
  context: {cluster: local, user: kubelet-bootstrap}
current-context: bootstrap
`, m.APIServer, b64(ca), m.BootstrapToken)
}

// importImages loads each image tarball once (a marker per tarball).
func importImages(ctx context.Context, m *Machine) error {
	var todo []string
	markers := map[string]string{}
	for _, img := range m.Images {
		marker, err := importMarker(m, img)
		if err != nil {
			return err
		}
		if !exists(marker) {
			todo = append(todo, img)
			markers[img] = marker
		}
	}
	return importTarballs(ctx, m.Socket(), todo, func(img string) error {
		return os.WriteFile(markers[img], nil, 0o600)
	})
}

// seedImages gives a new machine (no containerd root yet) its images from
// the seed of its image set, and marks them imported.
func (p *Provider) seedImages(ctx context.Context, m *Machine) error {
	root := m.path("containerd", "root")
	if exists(root) || len(m.Images) == 0 {
		return nil
	}
	p.seedsOnce.Do(func() { p.imageSeeds = &seeds{dir: filepath.Join(p.StateDir, "image-seeds")} })
	if err := os.MkdirAll(p.imageSeeds.dir, 0o700); err != nil {
		return err
	}
	seeded, err := p.imageSeeds.seedRoot(ctx, m.Images, root)
	if err != nil {
		// The machine imports its images itself (importImages), slower
		// but independent of the seed.
		log.FromContext(ctx).Error(err, "image seed unusable; the machine imports its images itself", "machine", m.Name)
		return nil
	}
	if !seeded {
		return nil
	}
	for _, img := range m.Images {
		marker, err := importMarker(m, img)
		if err != nil {
			return err
		}
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Delete stops a machine and removes everything of it: processes (also the
// containers and shims in its cgroup), mounts, cgroups, network namespace
// and directories.
func (p *Provider) delete(ctx context.Context, m *Machine) error {
	prefix := m.processPrefix()
	p.Supervisor.StopPrefix(prefix + "kube")
	if socketReady(m.Socket()) {
		if err := removePods(ctx, m.Socket()); err != nil {
			// Not fatal: the cgroup sweep below ends whatever is left.
			fmt.Fprintf(os.Stderr, "machine %s: remove pods: %v\n", m.Name, err)
		}
	}
	p.Supervisor.KillPrefix(prefix)
	if err := killCgroup(m.cgroupRoot()); err != nil {
		return err
	}
	if err := supervisor.WaitStopped(ctx, p.Supervisor.Owner(), prefix); err != nil {
		return err
	}
	for _, dir := range []string{m.DiskDir, m.Dir, m.runDir()} {
		if dir == "" {
			continue
		}
		if err := unmountUnder(dir); err != nil {
			return err
		}
	}
	if err := removeCgroup(m.cgroupRoot()); err != nil {
		return err
	}
	if err := m.Network.DeleteMachine(ctx, m.Index); err != nil {
		return err
	}
	for _, dir := range []string{m.DiskDir, m.Dir, m.runDir()} {
		if dir == "" {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	return nil
}

// DiskRoot is the directory of the machines' kubelet roots: "m" right under
// the state directory, to keep socket paths short.
func DiskRoot(stateDir string) string { return filepath.Join(stateDir, "m") }

// DiskDir is where machine idx of a network keeps its kubelet root, below
// diskRoot (a short directory of the state directory).
func DiskDir(diskRoot, networkID string, idx int) string {
	return filepath.Join(diskRoot, fmt.Sprintf("%s-%d", networkID, idx))
}

func socketReady(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func writeIfChanged(path, content string) error {
	return fsutil.WriteIfChanged(path, []byte(content), 0o600)
}

// cgroup hierarchies of this host (cgroup v1: one directory per controller).
func cgroupDirs(root string) []string {
	matches, _ := filepath.Glob("/sys/fs/cgroup/*")
	var out []string
	for _, h := range matches {
		if fi, err := os.Stat(h); err == nil && fi.IsDir() {
			out = append(out, filepath.Join(h, root))
		}
	}
	return out
}

func ensureCgroup(root string) error {
	for _, d := range cgroupDirs(root) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			continue // a hierarchy we may not write (e.g. a read-only one) is not ours to manage
		}
		// cpuset cgroups start empty and refuse tasks until they have CPUs and memory nodes.
		if strings.Contains(d, "/cpuset/") {
			parent := filepath.Dir(d)
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if cur, _ := os.ReadFile(filepath.Join(d, f)); len(strings.TrimSpace(string(cur))) == 0 {
					v, err := os.ReadFile(filepath.Join(parent, f))
					if err == nil {
						_ = os.WriteFile(filepath.Join(d, f), v, 0o644)
					}
				}
			}
		}
	}
	return nil
}

// limitCgroup bounds a machine of a sized class as a VM of that size is
// bounded: its CPU time to the class's CPUs, its memory to the class's
// plus what its own agents need (cgroup v1: cpu and memory hierarchies).
// The kubelet bounds the pods inside to the allocatable.
func limitCgroup(root string, c machine.Class) error {
	if c.CPU == 0 && c.Memory == 0 {
		return nil
	}
	const period = 100000
	writes := map[string]string{}
	if c.CPU > 0 {
		writes["cpu/cpu.cfs_period_us"] = fmt.Sprint(period)
		writes["cpu/cpu.cfs_quota_us"] = fmt.Sprint(c.CPU * period / 1000)
	}
	if c.Memory > 0 {
		writes["memory/memory.limit_in_bytes"] = fmt.Sprint(c.Memory + machine.AgentOverhead)
	}
	for rel, v := range writes {
		dir, file := filepath.Split(rel)
		base := filepath.Join("/sys/fs/cgroup", dir)
		if _, err := os.Stat(base); err != nil {
			// cgroup v2 (one hierarchy): cpu.max and memory.max.
			if strings.HasPrefix(file, "cpu.cfs_quota") {
				if err := os.WriteFile(filepath.Join("/sys/fs/cgroup", root, "cpu.max"), []byte(v+" "+fmt.Sprint(period)), 0o644); err != nil {
					return err
				}
			} else if strings.HasPrefix(file, "memory.limit") {
				if err := os.WriteFile(filepath.Join("/sys/fs/cgroup", root, "memory.max"), []byte(v), 0o644); err != nil {
					return err
				}
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(base, root, file), []byte(v), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// killCgroup SIGKILLs every process in the machine's cgroups until none is left.
func killCgroup(root string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		pids := cgroupPIDs(root)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in cgroup %s do not die", pids, root)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cgroupPIDs(root string) []int {
	seen := map[int]bool{}
	for _, d := range cgroupDirs(root) {
		_ = filepath.WalkDir(d, func(path string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	out := make([]int, 0, len(seen))
	for pid := range seen {
		out = append(out, pid)
	}
	sort.Ints(out)
	return out
}

// removeCgroup removes the machine's cgroups, deepest first (only empty
// cgroups can be removed).
func removeCgroup(root string) error {
	var errs []error
	for _, d := range cgroupDirs(root) {
		var dirs []string
		_ = filepath.WalkDir(d, func(path string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, dir := range dirs {
			if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", dir, err))
			}
		}
	}
	return errors.Join(errs...)
}

// UnmountUnder unmounts every mount point below dir, deepest first.
func UnmountUnder(dir string) error { return unmountUnder(dir) }

// unmountUnder unmounts every mount point below dir, deepest first.
func unmountUnder(dir string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, mp := range points {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("unmount %s: %w", mp, err)
		}
	}
	return nil
}

// unescapeMount decodes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupFile records a machine's cgroup root in its directory, so a
// shutdown can find every machine's containers without the API.
const cgroupFile = "cgroup"

// StopAll ends every process of every local machine under stateDir:
// containers and containerd shims live in the machines' cgroups, not in the
// supervised process groups, so stopping the supervisor alone leaves them.
// Data, mounts and namespaces stay; the next start brings the machines back.
func StopAll(stateDir string) error {
	files, err := filepath.Glob(filepath.Join(stateDir, "clusters", "*", "*", "machines", "*", cgroupFile))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		root, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if err := killCgroup(strings.TrimSpace(string(root))); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DeleteLeftovers removes everything of a cluster's local machines that is
// still on the host, whatever state their objects are in: processes and
// containers (by cgroup), mounts, cgroups, runtime directories, machine
// namespaces, and finally the cluster's switch and uplink.
func DeleteLeftovers(ctx context.Context, clusterDir, diskRoot, networkID string) error {
	var errs []error
	var dirs []string
	if clusterDir != "" {
		dirs, _ = filepath.Glob(filepath.Join(clusterDir, "machines", "*"))
	}
	roots := map[string]bool{}
	for _, d := range dirs {
		if root, err := os.ReadFile(filepath.Join(d, cgroupFile)); err == nil {
			roots[strings.TrimSpace(string(root))] = true
		}
	}
	// Cgroups of machines whose directory is already gone.
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/lotse-" + networkID + "-*")
	for _, cg := range cgs {
		roots["/"+filepath.Base(cg)] = true
	}
	for root := range roots {
		if err := killCgroup(root); err != nil {
			errs = append(errs, err)
		}
	}
	runDirs, _ := filepath.Glob(filepath.Join("/run/lotse", networkID+"-*"))
	disks, _ := filepath.Glob(filepath.Join(diskRoot, networkID+"-*"))
	runDirs = append(runDirs, disks...)
	for _, d := range append(dirs, runDirs...) {
		if err := unmountUnder(d); err != nil {
			errs = append(errs, err)
		}
	}
	for root := range roots {
		if err := removeCgroup(root); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range runDirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	nss, _ := netns.List("lm-" + networkID + "-")
	for _, ns := range nss {
		if err := netns.Delete(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := (Network{ID: networkID}).DeleteCluster(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// egressChain holds a machine's egress policy (in the machine's namespace).
const egressChain = "LOTSE-EGRESS"

// egressSeenChain counts, in the raw table, the packets the egress policy
// is about to reject. The network policy agent rewrites the whole filter
// table now and then (kube-router saves and restores it), which resets
// the counters of the filter chain; raw is left alone, so this count is
// the lasting evidence of what the policy stopped.
const egressSeenChain = "LOTSE-EGRESS-SEEN"

// ensureMachineNetwork plugs the machine into its cluster's network and
// puts its masquerade and egress rules in place, unless that was done for
// the same configuration and namespace within networkRecheck.
func (p *Provider) ensureMachineNetwork(ctx context.Context, m *Machine) (netip.Addr, error) {
	ns := m.Network.MachineNS(m.Index)
	config := fmt.Sprintf("%s %d %s %s %t", m.Network.CIDR, m.Index, m.ClusterCIDR, m.ServiceCIDR, m.Egress)
	if e, ok := p.networkEnsured(ns, config); ok {
		return e.ip, nil
	}
	ip, err := m.Network.EnsureMachine(ctx, m.Index)
	if err != nil {
		return ip, fmt.Errorf("network: %w", err)
	}
	if err := ensureMasquerade(ctx, m); err != nil {
		return ip, err
	}
	if err := ensureEgressPolicy(ctx, m); err != nil {
		return ip, err
	}
	p.networks.Store(ns, ensuredNetwork{config: config, inode: namespaceInode(ns), at: time.Now(), ip: ip})
	return ip, nil
}

// namespaceInode identifies a named network namespace (0 when there is
// none).
func namespaceInode(name string) uint64 {
	fi, err := os.Stat(netns.Path(name))
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

func ensureEgressPolicy(ctx context.Context, m *Machine) error {
	ns := m.Network.MachineNS(m.Index)
	exceptions := [][]string{{"-o", "lo", "-j", "RETURN"}}
	for _, cidr := range []string{m.Network.CIDR.String(), m.ClusterCIDR, m.ServiceCIDR} {
		if cidr != "" {
			exceptions = append(exceptions, []string{"-d", cidr, "-j", "RETURN"})
		}
	}
	chains := []struct {
		table, chain string
		builtins     []string
		last         []string
	}{
		{"filter", egressChain, []string{"OUTPUT", "FORWARD"},
			[]string{"-m", "comment", "--comment", "lotse: egress denied (spec.networking.egress)", "-j", "REJECT", "--reject-with", "icmp-net-unreachable"}},
		// In raw, -o is not known yet (no routing decision): loopback
		// traffic is told apart by its destination.
		{"raw", egressSeenChain, []string{"OUTPUT", "PREROUTING"},
			[]string{"-m", "comment", "--comment", "lotse: egress attempts (rejected in filter " + egressChain + ")", "-j", "ACCEPT"}},
	}
	for _, c := range chains {
		if m.Egress {
			for _, builtin := range c.builtins {
				netns.DeleteJump(ctx, ns, c.table, builtin, "-j", c.chain)
			}
			continue
		}
		rules := append([][]string{}, exceptions...)
		if c.table == "raw" {
			rules[0] = []string{"-d", "127.0.0.0/8", "-j", "RETURN"}
		}
		rules = append(rules, c.last)
		if err := netns.EnsureChain(ctx, ns, c.table, c.chain, rules); err != nil {
			return err
		}
		for _, builtin := range c.builtins {
			if err := netns.EnsureJump(ctx, ns, c.table, builtin, "-j", c.chain); err != nil {
				return err
			}
		}
	}
	return nil
}

// ensureMasquerade gives traffic from pods to anything outside the cluster's
// pod range (the API endpoint, the host) the machine's address, so replies
// find their way back without routes into every node's pod range.
func ensureMasquerade(ctx context.Context, m *Machine) error {
	rule := []string{"POSTROUTING", "-s", m.ClusterCIDR, "!", "-d", m.ClusterCIDR, "-m", "comment", "--comment", "lotse: pods leaving the cluster", "-j", "MASQUERADE"}
	ns := m.Network.MachineNS(m.Index)
	if netns.IPTables(ctx, ns, "nat", append([]string{"-C"}, rule...)...) == nil {
		return nil
	}
	return netns.IPTables(ctx, ns, "nat", append([]string{"-A"}, rule...)...)
}

// kubeletMaySetLabel mirrors the NodeRestriction admission rule: keys in the
// kubernetes.io and k8s.io domains are refused unless they are in the
// kubelet's own or the node-restriction namespaces, or well known.
func kubeletMaySetLabel(key string) bool {
	domain, _, ok := strings.Cut(key, "/")
	if !ok {
		return true
	}
	restricted := domain == "kubernetes.io" || domain == "k8s.io" || strings.HasSuffix(domain, ".kubernetes.io") || strings.HasSuffix(domain, ".k8s.io")
	if !restricted {
		return true
	}
	switch domain {
	case "kubelet.kubernetes.io", "node.kubernetes.io", "topology.kubernetes.io":
		return true
	}
	return strings.HasSuffix(domain, ".node-restriction.kubernetes.io") || domain == "node-restriction.kubernetes.io"
}

// ImportedImage is an image tarball to import, with its reference and the
// image ID it has (images.Builder.Stamp), so an import already done is
// skipped.
type ImportedImage struct {
	Tarball, Ref, ID string
}

// ImportImages imports images into the containerd of every running
// machine of a cluster: how a Lotse cluster that serves as a seed gets the
// images of the control planes it hosts. An image a machine has already
// is not imported again.
func (p *Provider) ImportImages(ctx context.Context, cluster clusterref.Ref, imgs []ImportedImage) (machines int, err error) {
	n, _ := p.Network(cluster, "")
	sockets, err := filepath.Glob(filepath.Join("/run/lotse", n.ID+"-*", "containerd.sock"))
	if err != nil {
		return 0, err
	}
	for _, sock := range sockets {
		if !socketReady(sock) {
			continue
		}
		for _, img := range imgs {
			if err := images.EnsureImported(ctx, "", sock, img.Tarball, img.Ref, img.ID); err != nil {
				return machines, err
			}
		}
		machines++
	}
	return machines, nil
}
