package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"

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

// EnsureCluster creates the switch, the bridge and the host uplink, and
// lets the machines reach only apiPort on the gateway (see hostFirewall).
func (n Network) EnsureCluster(ctx context.Context, apiPort int) error {
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
	return n.ensureHostFirewall(ctx, apiPort)
}

func (n Network) chain() string { return "LOTSE-" + n.ID }

func iptables(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ensureHostFirewall isolates the cluster's machines from the host and from
// other clusters: from the uplink, the host accepts only the API endpoint and
// answers to connections it opened itself (API server to kubelet, NodePorts),
// and forwards nothing (a later ip_forward=1 would otherwise re-enable
// forwarding on the uplink).
func (n Network) ensureHostFirewall(ctx context.Context, apiPort int) error {
	if iptables(ctx, "-N", n.chain()) == nil {
		for _, rule := range [][]string{
			{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
			{"-p", "tcp", "-d", n.Gateway().String(), "--dport", strconv.Itoa(apiPort), "-j", "ACCEPT"},
			{"-j", "DROP"},
		} {
			if err := iptables(ctx, append([]string{"-A", n.chain()}, rule...)...); err != nil {
				return err
			}
		}
	}
	for _, hook := range [][]string{
		{"INPUT", "-i", n.HostLink(), "-j", n.chain()},
		{"FORWARD", "-i", n.HostLink(), "-j", "DROP"},
		{"FORWARD", "-o", n.HostLink(), "-j", "DROP"},
	} {
		if iptables(ctx, append([]string{"-C"}, hook...)...) != nil {
			if err := iptables(ctx, append([]string{"-I"}, hook...)...); err != nil {
				return err
			}
		}
	}
	return nil
}

func (n Network) deleteHostFirewall(ctx context.Context) {
	for _, hook := range [][]string{
		{"INPUT", "-i", n.HostLink(), "-j", n.chain()},
		{"FORWARD", "-i", n.HostLink(), "-j", "DROP"},
		{"FORWARD", "-o", n.HostLink(), "-j", "DROP"},
	} {
		// -D removes one copy per call; repeat until none is left.
		for i := 0; i < 10 && iptables(ctx, append([]string{"-D"}, hook...)...) == nil; i++ {
			continue
		}
	}
	_ = iptables(ctx, "-F", n.chain())
	_ = iptables(ctx, "-X", n.chain())
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
