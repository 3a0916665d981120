package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/lotse/lotse/internal/cloudprovider"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/fsutil"
	machinelocal "github.com/lotse/lotse/internal/machine/local"
	"github.com/lotse/lotse/internal/netns"
	"github.com/lotse/lotse/internal/servicelb"
	"github.com/lotse/lotse/internal/supervisor"
)

// PublicInterface carries the public balancer addresses (as /32s): the
// host's loopback, which every kernel has (not every kernel has dummy
// interfaces), so they answer on the host and nowhere else.
const PublicInterface = "lo"

// internalAddresses is how many addresses at the top of a cluster's node
// network are kept for internal balancers (machines are numbered from the
// bottom).
const internalAddresses = 16

// LoadBalancers runs each balancer as a supervised `lotse service-lb`
// process. Its spec file (STATE/loadbalancers/<cluster>/<name>.json) is
// the record of the balancer and its address: allocation reads the files,
// so it survives restarts without a database.
type LoadBalancers struct {
	Supervisor *supervisor.Supervisor
	StateDir   string
	// Binary is the lotse executable.
	Binary string
	// PublicPool is where public addresses come from.
	PublicPool netip.Prefix
	// NodesCIDR returns a cluster's node network (for internal addresses).
	NodesCIDR func(clusterref.Ref) (netip.Prefix, error)

	mu sync.Mutex
}

var _ cloudprovider.LoadBalancers = (*LoadBalancers)(nil)

type record struct {
	servicelb.Spec
	Internal bool `json:"internal"`
	// Link is the host interface the address is on.
	Link string `json:"link"`
}

func (l *LoadBalancers) dir(cluster clusterref.Ref) string {
	return filepath.Join(l.StateDir, "loadbalancers", cluster.Namespace, cluster.Name)
}

func (l *LoadBalancers) file(cluster clusterref.Ref, name string) string {
	return filepath.Join(l.dir(cluster), name+".json")
}

// processName groups a cluster's balancers under the cluster's key, so
// they stop with its control plane.
func processName(cluster clusterref.Ref, name string) string {
	return cluster.Key() + "/lb-" + name
}

func (l *LoadBalancers) read(path string) (*record, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := &record{}
	return r, json.Unmarshal(data, r)
}

// used lists every address in use by any cluster's balancer.
func (l *LoadBalancers) used() (map[netip.Addr]bool, error) {
	files, err := filepath.Glob(filepath.Join(l.StateDir, "loadbalancers", "*", "*", "*.json"))
	if err != nil {
		return nil, err
	}
	out := map[netip.Addr]bool{}
	for _, f := range files {
		r, err := l.read(f)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(r.Address); err == nil {
			out[a] = true
		}
	}
	return out, nil
}

// allocate picks a free address: the public pool from the bottom, or the
// top of the node network for internal balancers.
func (l *LoadBalancers) allocate(cluster clusterref.Ref, internal bool) (netip.Addr, string, error) {
	used, err := l.used()
	if err != nil {
		return netip.Addr{}, "", err
	}
	if internal {
		nodes, err := l.NodesCIDR(cluster)
		if err != nil {
			return netip.Addr{}, "", err
		}
		n, err := machinelocal.ParseNetwork(machinelocal.NetworkID(l.Supervisor.Owner(), cluster.Key()), nodes.String())
		if err != nil {
			return netip.Addr{}, "", err
		}
		last := lastAddr(nodes)
		for i, a := 0, last.Prev(); i < internalAddresses && nodes.Contains(a); i, a = i+1, a.Prev() {
			if !used[a] {
				return a, n.HostLink(), nil
			}
		}
		return netip.Addr{}, "", fmt.Errorf("internal addresses of %s: %w", nodes, cloudprovider.ErrPoolExhausted)
	}
	p := l.PublicPool.Masked()
	last := lastAddr(p)
	for a := p.Addr().Next(); p.Contains(a) && a != last; a = a.Next() {
		if !used[a] {
			return a, PublicInterface, nil
		}
	}
	return netip.Addr{}, "", fmt.Errorf("public pool %s: %w", p, cloudprovider.ErrPoolExhausted)
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Ensure creates or updates a balancer; its address stays while it exists.
func (l *LoadBalancers) Ensure(ctx context.Context, lb cloudprovider.LoadBalancer) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	path := l.file(lb.Cluster, lb.Name)
	rec, err := l.read(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if rec != nil && rec.Internal != lb.Internal {
		// Public <-> internal: a new address of the other kind.
		if err := l.remove(ctx, lb.Cluster, lb.Name, rec); err != nil {
			return "", err
		}
		rec = nil
	}
	if rec == nil {
		addr, link, err := l.allocate(lb.Cluster, lb.Internal)
		if err != nil {
			return "", err
		}
		rec = &record{Spec: servicelb.Spec{Address: addr.String()}, Internal: lb.Internal, Link: link}
	}
	rec.Listeners = lb.Listeners
	if err := rec.Spec.Validate(); err != nil {
		return "", err
	}
	if err := netns.EnsureAddress(ctx, "", rec.Link, rec.Address+"/32"); err != nil {
		return "", err
	}
	if err := os.MkdirAll(l.dir(lb.Cluster), 0o700); err != nil {
		return "", err
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return "", err
	}
	// The running balancer notices the new file and applies it in place.
	if err := fsutil.WriteIfChanged(path, data, 0o600); err != nil {
		return "", err
	}
	err = l.Supervisor.Ensure(supervisor.Spec{
		Name:    processName(lb.Cluster, lb.Name),
		Path:    l.Binary,
		Args:    []string{"service-lb", "--config", path},
		LogFile: strings.TrimSuffix(path, ".json") + ".log",
	})
	return rec.Address, err
}

// Get returns a balancer's address.
func (l *LoadBalancers) Get(_ context.Context, cluster clusterref.Ref, name string) (string, bool, error) {
	rec, err := l.read(l.file(cluster, name))
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return rec.Address, true, nil
}

// Delete stops a balancer and releases its address.
func (l *LoadBalancers) Delete(ctx context.Context, cluster clusterref.Ref, name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	rec, err := l.read(l.file(cluster, name))
	if errors.Is(err, os.ErrNotExist) {
		l.Supervisor.Stop(processName(cluster, name))
		return nil
	}
	if err != nil {
		return err
	}
	return l.remove(ctx, cluster, name, rec)
}

func (l *LoadBalancers) remove(ctx context.Context, cluster clusterref.Ref, name string, rec *record) error {
	l.Supervisor.Stop(processName(cluster, name))
	if err := netns.DeleteAddress(ctx, "", rec.Link, rec.Address+"/32"); err != nil {
		return err
	}
	path := l.file(cluster, name)
	_ = os.Remove(strings.TrimSuffix(path, ".json") + ".log")
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// DeleteCluster removes every balancer of a deleted cluster.
func (l *LoadBalancers) DeleteCluster(ctx context.Context, cluster clusterref.Ref) error {
	files, err := filepath.Glob(filepath.Join(l.dir(cluster), "*.json"))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		errs = append(errs, l.Delete(ctx, cluster, strings.TrimSuffix(filepath.Base(f), ".json")))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.RemoveAll(l.dir(cluster))
}

// RemoveAll takes the addresses of every balancer recorded under stateDir
// off the host and removes the records (`lotse down --purge`; the
// processes are stopped already).
func RemoveAll(ctx context.Context, stateDir string) error {
	files, err := filepath.Glob(filepath.Join(stateDir, "loadbalancers", "*", "*", "*.json"))
	if err != nil {
		return err
	}
	l := &LoadBalancers{StateDir: stateDir}
	var errs []error
	for _, f := range files {
		rec, err := l.read(f)
		if err != nil {
			continue
		}
		errs = append(errs, netns.DeleteAddress(ctx, "", rec.Link, rec.Address+"/32"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(stateDir, "loadbalancers"))
}
