package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/lotse/lotse/internal/netns"
)

// Network is the isolated network of one cluster's local machines:
//
//	host netns                 switch netns lsw-ID          machine netns lm-ID-N
//	lh-ID (gateway .1) <--veth--> up0 ─┐
//	                                   br0 ── mN <--veth--> eth0 (.10+N)
//
// The switch namespace is a pure L2 bridge (no addresses, no iptables), as
// the feasibility notes found necessary: a bridge inside a routing namespace
// made masqueraded traffic pass conntrack twice. The host end carries the
// gateway address, through which nodes reach the cluster's API endpoint and
// the host reaches node ports. Forwarding is off on the host end, so one
// cluster's machines cannot reach another cluster's through the host.
type Network struct {
	// ID is derived from the cluster key; it keeps interface names short.
	ID   string
	CIDR netip.Prefix
}

// NetworkID derives the short id of a cluster's network from the owner of
// the processes (the state directory's id) and the cluster key, so two lotse
// instances on one host never share namespace, cgroup or interface names.
func NetworkID(owner, clusterKey string) string {
	sum := sha256.Sum256([]byte(owner + "/" + clusterKey))
	return hex.EncodeToString(sum[:])[:8]
}

// SwitchNS is the namespace holding the cluster's bridge.
func (n Network) SwitchNS() string { return "lsw-" + n.ID }

// HostLink is the host end of the uplink.
func (n Network) HostLink() string { return "lh-" + n.ID }

// MachineNS is the namespace of machine number idx.
func (n Network) MachineNS(idx int) string { return fmt.Sprintf("lm-%s-%d", n.ID, idx) }

// Gateway is the host's address in the network.
func (n Network) Gateway() netip.Addr { return n.CIDR.Masked().Addr().Next() }

// MachineIP is the address of machine number idx.
func (n Network) MachineIP(idx int) (netip.Addr, error) {
	a := n.CIDR.Masked().Addr()
	for i := 0; i < 10+idx; i++ {
		a = a.Next()
	}
	if !n.CIDR.Contains(a) || !n.CIDR.Contains(a.Next()) { // keep the broadcast address free
		return netip.Addr{}, fmt.Errorf("machine index %d does not fit into %s", idx, n.CIDR)
	}
	return a, nil
}

func (n Network) prefixLen() int { return n.CIDR.Bits() }

// ClusterRanges are what the host needs to know of a cluster's network
// beyond its nodes range.
type ClusterRanges struct {
	// GatewayPorts are the TCP ports machines may reach on the gateway
	// (the API endpoint and the tunnel endpoint).
	GatewayPorts []int
	// Pods and Services are the cluster's pod and Service ranges: the host
	// never routes them (see ensureHostFirewall).
	Pods, Services string
}

// EnsureCluster creates the switch, the bridge and the host uplink, and the
// host's firewall for the cluster (see ensureHostFirewall).
func (n Network) EnsureCluster(ctx context.Context, r ClusterRanges) error {
	sw := n.SwitchNS()
	if err := netns.Create(ctx, sw); err != nil {
		return err
	}
	// Bridged frames must not go through iptables (only where br_netfilter is loaded).
	_ = netns.Sysctl(ctx, sw, "net.bridge.bridge-nf-call-iptables", "0")
	if err := netns.EnsureBridge(ctx, sw, "br0"); err != nil {
		return err
	}
	if err := netns.EnsureVeth(ctx, "", n.HostLink(), sw, "up0"); err != nil {
		return err
	}
	if err := netns.SetMaster(ctx, sw, "up0", "br0"); err != nil {
		return err
	}
	if err := netns.EnsureAddress(ctx, "", n.HostLink(), fmt.Sprintf("%s/%d", n.Gateway(), n.prefixLen())); err != nil {
		return err
	}
	if err := netns.Sysctl(ctx, "", "net.ipv4.conf."+n.HostLink()+".forwarding", "0"); err != nil {
		return err
	}
	return n.ensureHostFirewall(ctx, r)
}

// chain filters what the machines send to the host; outputChain what the
// host sends towards the cluster's pod and Service ranges.
func (n Network) chain() string       { return "LOTSE-" + n.ID }
func (n Network) outputChain() string { return "LOTSE-" + n.ID + "-OUT" }

// ensureHostFirewall isolates the cluster's machines from the host and from
// other clusters: from the uplink, the host accepts only the gateway ports
// and answers to connections it opened itself (NodePorts), and forwards
// nothing (a later ip_forward=1 would otherwise re-enable forwarding on the
// uplink).
//
// Defence in depth for the tunnel: the host has no route into a cluster's
// pod and Service ranges (the API servers reach them through konnectivity),
// and those ranges overlap between clusters and may exist beyond the host.
// A component that bypasses the tunnel must fail at once and locally, not
// send the packet to the host's default route: the output chain rejects it.
func (n Network) ensureHostFirewall(ctx context.Context, r ClusterRanges) error {
	rules := [][]string{{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}}
	for _, port := range r.GatewayPorts {
		rules = append(rules, []string{"-p", "tcp", "-d", n.Gateway().String(), "--dport", strconv.Itoa(port), "-j", "ACCEPT"})
	}
	rules = append(rules, []string{"-j", "DROP"})
	if err := netns.EnsureChain(ctx, "", "filter", n.chain(), rules); err != nil {
		return err
	}
	// Machine networks are the host's own links: never rejected here.
	out := [][]string{{"-o", "lh-+", "-j", "RETURN"}}
	for _, cidr := range []string{r.Pods, r.Services} {
		// A range that overlaps a network of the host itself is the
		// host's to route: rejecting it would cut the host off.
		if cidr != "" && !overlapsHostNetwork(cidr) {
			out = append(out, []string{"-d", cidr, "-m", "comment", "--comment", "lotse: cluster ranges are reached through the tunnel", "-j", "REJECT", "--reject-with", "icmp-net-unreachable"})
		}
	}
	if err := netns.EnsureChain(ctx, "", "filter", n.outputChain(), out); err != nil {
		return err
	}
	for _, hook := range n.hostHooks() {
		if err := netns.EnsureJump(ctx, "", "filter", hook[0], hook[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// overlapsHostNetwork reports whether cidr overlaps the network of one of
// the host's interfaces other than Lotse's own uplinks.
func overlapsHostNetwork(cidr string) bool {
	want, err := netip.ParsePrefix(cidr)
	if err != nil {
		return false
	}
	ifaces, _ := net.Interfaces()
	for _, iface := range ifaces {
		if len(iface.Name) > 3 && iface.Name[:3] == "lh-" {
			continue
		}
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() && p.Masked().Overlaps(want) {
				return true
			}
		}
	}
	return false
}

func (n Network) hostHooks() [][]string {
	return [][]string{
		{"INPUT", "-i", n.HostLink(), "-j", n.chain()},
		{"FORWARD", "-i", n.HostLink(), "-j", "DROP"},
		{"FORWARD", "-o", n.HostLink(), "-j", "DROP"},
		{"OUTPUT", "-j", n.outputChain()},
	}
}

func (n Network) deleteHostFirewall(ctx context.Context) {
	for _, hook := range n.hostHooks() {
		netns.DeleteJump(ctx, "", "filter", hook[0], hook[1:]...)
	}
	netns.DeleteChain(ctx, "", "filter", n.chain())
	netns.DeleteChain(ctx, "", "filter", n.outputChain())
}

// DeleteCluster removes the switch namespace; the host uplink goes with its peer.
func (n Network) DeleteCluster(ctx context.Context) error {
	n.deleteHostFirewall(ctx)
	if err := netns.Delete(ctx, n.SwitchNS()); err != nil {
		return err
	}
	return netns.DeleteLink(ctx, "", n.HostLink())
}

// EnsureMachine creates machine idx's namespace, plugged into the bridge.
func (n Network) EnsureMachine(ctx context.Context, idx int) (netip.Addr, error) {
	ip, err := n.MachineIP(idx)
	if err != nil {
		return ip, err
	}
	ns, sw := n.MachineNS(idx), n.SwitchNS()
	if err := netns.Create(ctx, ns); err != nil {
		return ip, err
	}
	port := fmt.Sprintf("m%d", idx)
	if err := netns.EnsureVeth(ctx, ns, "eth0", sw, port); err != nil {
		return ip, err
	}
	if err := netns.SetMaster(ctx, sw, port, "br0"); err != nil {
		return ip, err
	}
	if err := netns.EnsureAddress(ctx, ns, "eth0", fmt.Sprintf("%s/%d", ip, n.prefixLen())); err != nil {
		return ip, err
	}
	if err := netns.ReplaceRoute(ctx, ns, "default", n.Gateway().String(), "eth0"); err != nil {
		return ip, err
	}
	// Pods on this machine route through it.
	if err := netns.Sysctl(ctx, ns, "net.ipv4.ip_forward", "1"); err != nil {
		return ip, err
	}
	return ip, nil
}

// DeleteMachine removes machine idx's namespace and its switch port.
func (n Network) DeleteMachine(ctx context.Context, idx int) error {
	if err := netns.Delete(ctx, n.MachineNS(idx)); err != nil {
		return err
	}
	return netns.DeleteLink(ctx, n.SwitchNS(), fmt.Sprintf("m%d", idx))
}

// ParseNetwork returns the network with the given id and nodes CIDR.
func ParseNetwork(id, cidr string) (Network, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return Network{}, fmt.Errorf("nodes network %q: %w", cidr, err)
	}
	return Network{ID: id, CIDR: p.Masked()}, nil
}
