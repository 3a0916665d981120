package seed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/fsutil"
)

// LayoutFile is the file, in a control plane's directory, that records
// where it runs. Its field nodesCIDR is read by the process backend too,
// which allocates every nodes network of the state directory.
const LayoutFile = "seed.json"

// Layout is what a seed-hosted control plane keeps stable: its seed, its
// namespace there, and the host's ports in front of it.
type Layout struct {
	// Seed is the Seed object the control plane runs on.
	Seed string `json:"seed"`
	// Namespace holds the control plane's objects in the seed.
	Namespace string `json:"namespace"`
	// NodesCIDR is the network of the cluster's machines; its first
	// address (the gateway) is where they reach the API.
	NodesCIDR string `json:"nodesCIDR"`
	// APIPort is where the host serves the API: on 127.0.0.1 for the
	// manager and clients on this host, and on the gateway for the
	// machines; both forward to the seed's node port of the API servers.
	APIPort int `json:"apiPort"`
	// TunnelPort is where the machines' konnectivity agents dial the
	// tunnel servers on the gateway (0: no tunnel).
	TunnelPort int `json:"tunnelPort,omitempty"`
	// HighAvailability: 3 etcd members, 2 API servers (once etcd has
	// grown, for a control plane made highly available later).
	HighAvailability bool `json:"highAvailability,omitempty"`
	// EtcdJoined, while etcd grows from one member to three, is how many
	// members are in it (1 or 2); 0 otherwise.
	EtcdJoined int `json:"etcdJoined,omitempty"`
	// EtcdGrown: members beyond the first joined a running etcd instead
	// of starting it together, so they start as existing members.
	EtcdGrown bool `json:"etcdGrown,omitempty"`
	// Service is how the seed exposes the API servers, fixed when the
	// control plane is placed (a layout from before it: NodePort).
	Service controlplane.ServiceExposure `json:"service,omitempty"`
	// ExternalAddress is the address the seed's load balancer gave the
	// API servers' Service: the endpoint, and a name in the API server's
	// certificate.
	ExternalAddress string `json:"externalAddress,omitempty"`
}

// etcdGrowing reports whether etcd is growing to three members.
func (l Layout) etcdGrowing() bool { return l.HighAvailability && l.EtcdJoined > 0 }

// Gateway is the first address of the nodes network.
func (l Layout) Gateway() string {
	p, err := netip.ParsePrefix(l.NodesCIDR)
	if err != nil {
		return ""
	}
	return p.Masked().Addr().Next().String()
}

// Endpoint is the API URL for clients: the load balancer's address, or
// the forwarder on this host. It is empty while the load balancer has
// given no address yet.
func (l Layout) Endpoint() string {
	switch {
	case l.ExternalAddress != "":
		return "https://" + net.JoinHostPort(l.ExternalAddress, strconv.Itoa(apiServerPort))
	case l.behindLoadBalancer():
		return ""
	}
	return fmt.Sprintf("https://127.0.0.1:%d", l.APIPort)
}

// behindLoadBalancer: clients reach the API through the seed's load
// balancer, not through this host.
func (l Layout) behindLoadBalancer() bool { return l.Service.LoadBalancer }

// NodeEndpoint is the API URL for the machines and their pods.
func (l Layout) NodeEndpoint() string { return fmt.Sprintf("https://%s:%d", l.Gateway(), l.APIPort) }

// InSeedServer is the API URL for the control plane's own components in
// the seed (the controller-manager and the scheduler).
func (l Layout) InSeedServer() string {
	return fmt.Sprintf("https://%s.%s.svc:%d", apiServerService, l.Namespace, apiServerPort)
}

// etcdHost is the DNS name of etcd member i in the seed.
func (l Layout) etcdHost(i int) string {
	return fmt.Sprintf("%s-%d.%s.%s.svc", etcdName, i, etcdName, l.Namespace)
}

// APIServerHosts are the names the API server's certificate carries
// beyond the standard ones: the gateway and its Service in the seed.
func (l Layout) APIServerHosts() []string {
	hosts := []string{l.Gateway(), apiServerService + "." + l.Namespace + ".svc", apiServerService + "." + l.Namespace + ".svc.cluster.local"}
	if l.ExternalAddress != "" {
		hosts = append(hosts, l.ExternalAddress)
	}
	return hosts
}

// EtcdHosts are the names the etcd members' certificates carry.
func (l Layout) EtcdHosts() []string {
	var out []string
	for i := 0; i < maxEtcdMembers; i++ {
		out = append(out, l.etcdHost(i))
	}
	return out
}

var nameUnsafe = regexp.MustCompile(`[^a-z0-9-]+`)

// NamespaceFor names a control plane's namespace in its seed: readable,
// within 63 characters, and unique per owner and key (two managers may
// share a seed).
func NamespaceFor(owner, key string) string {
	sum := sha256.Sum256([]byte(owner + "/" + key))
	readable := nameUnsafe.ReplaceAllString(strings.ToLower(strings.TrimPrefix(key, "clusters/")), "-")
	if len(readable) > 40 {
		readable = readable[:40]
	}
	return "lotse-cp-" + strings.Trim(readable, "-") + "-" + hex.EncodeToString(sum[:])[:6]
}

func (b *Backend) layoutPath(key string) string { return filepath.Join(b.Dir(key), LayoutFile) }

// LoadLayout reads a control plane's layout.
func (b *Backend) LoadLayout(key string) (Layout, error) {
	var l Layout
	data, err := os.ReadFile(b.layoutPath(key))
	if err != nil {
		return l, err
	}
	return l, json.Unmarshal(data, &l)
}

// Hosts reports whether this backend hosts the control plane with key
// (it was placed on a seed: its directory says so, or Locate does).
func (b *Backend) Hosts(key string) bool {
	if _, err := os.Stat(b.layoutPath(key)); err == nil {
		return true
	}
	if b.Locate == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seed, err := b.Locate(ctx, key)
	return err == nil && seed != ""
}

func (b *Backend) saveLayout(key string, l Layout) error {
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(b.Dir(key), 0o700); err != nil {
		return err
	}
	return fsutil.WriteIfChanged(b.layoutPath(key), data, 0o600)
}

var errNoSeed = errors.New("the control plane has no seed yet")
