package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/lotse/lotse/internal/machine"
	"github.com/lotse/lotse/internal/netns"
)

// testMachineNS creates a network namespace named like a machine's of a
// test-only network and removes it when the test ends.
func testMachineNS(t *testing.T) *Machine {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	n, err := ParseNetwork(fmt.Sprintf("t%07d", os.Getpid()%10000000), "10.250.250.0/24")
	if err != nil {
		t.Fatal(err)
	}
	m := &Machine{Spec: machine.Spec{Index: 0, ClusterCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/16"}, Network: n}
	ctx := context.Background()
	if err := netns.Create(ctx, n.MachineNS(0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(context.Background(), n.MachineNS(0)) })
	return m
}

func rules(t *testing.T, ns, chain string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+netns.Path(ns), "--", "iptables", "-w", "-S", chain).CombinedOutput()
	if err != nil {
		return ""
	}
	return string(out)
}

func TestEgressPolicy(t *testing.T) {
	m := testMachineNS(t)
	ctx := context.Background()
	ns := m.Network.MachineNS(0)
	for i := 0; i < 2; i++ { // idempotent
		if err := ensureEgressPolicy(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	chain := rules(t, ns, egressChain)
	for _, want := range []string{"-d 10.250.250.0/24 -j RETURN", "-d 10.244.0.0/16 -j RETURN", "-d 10.96.0.0/16 -j RETURN", "-j REJECT --reject-with icmp-net-unreachable"} {
		if !strings.Contains(chain, want) {
			t.Errorf("%s lacks %q:\n%s", egressChain, want, chain)
		}
	}
	if n := strings.Count(chain, "REJECT"); n != 1 {
		t.Errorf("%d REJECT rules after two runs, want 1:\n%s", n, chain)
	}
	for _, builtin := range []string{"OUTPUT", "FORWARD"} {
		if got := rules(t, ns, builtin); strings.Count(got, "-j "+egressChain) != 1 {
			t.Errorf("%s does not jump to %s exactly once:\n%s", builtin, egressChain, got)
		}
	}
	seen := rawRules(t, ns, egressSeenChain)
	for _, want := range []string{"-d 127.0.0.0/8 -j RETURN", "-d 10.244.0.0/16 -j RETURN", "-j ACCEPT"} {
		if !strings.Contains(seen, want) {
			t.Errorf("%s lacks %q:\n%s", egressSeenChain, want, seen)
		}
	}
	for _, builtin := range []string{"OUTPUT", "PREROUTING"} {
		if got := rawRules(t, ns, builtin); strings.Count(got, "-j "+egressSeenChain) != 1 {
			t.Errorf("raw %s does not jump to %s exactly once:\n%s", builtin, egressSeenChain, got)
		}
	}
	// Allowing egress takes the jumps out.
	m.Egress = true
	if err := ensureEgressPolicy(ctx, m); err != nil {
		t.Fatal(err)
	}
	for _, builtin := range []string{"OUTPUT", "FORWARD"} {
		if got := rules(t, ns, builtin); strings.Contains(got, egressChain) {
			t.Errorf("egress allowed, but %s still jumps to %s:\n%s", builtin, egressChain, got)
		}
	}
	if got := rawRules(t, ns, "OUTPUT"); strings.Contains(got, egressSeenChain) {
		t.Errorf("egress allowed, but raw OUTPUT still counts:\n%s", got)
	}
}

func rawRules(t *testing.T, ns, chain string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+netns.Path(ns), "--", "iptables", "-w", "-t", "raw", "-S", chain).CombinedOutput()
	if err != nil {
		return ""
	}
	return string(out)
}

// A packet to the outside fails at once inside the machine.
func TestEgressRejectedLocally(t *testing.T) {
	m := testMachineNS(t)
	ctx := context.Background()
	ns := m.Network.MachineNS(0)
	// A default route, as machines have, so the kernel would send it.
	// Both ends of the link stay inside the namespace: even without the
	// rule, nothing could leave it.
	for _, args := range [][]string{{"link", "add", "v0", "type", "veth", "peer", "name", "v1"}, {"addr", "add", "10.250.250.10/24", "dev", "v0"},
		{"link", "set", "v0", "up"}, {"link", "set", "v1", "up"}, {"route", "add", "default", "via", "10.250.250.1"}} {
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	if err := ensureEgressPolicy(ctx, m); err != nil {
		t.Fatal(err)
	}
	// 192.0.2.0/24 is TEST-NET-1: even if the rule failed, nothing answers.
	out, err := exec.Command("nsenter", "--net="+netns.Path(ns), "--", "bash", "-c", "exec 3<>/dev/tcp/192.0.2.77/443").CombinedOutput()
	if err == nil || !(strings.Contains(string(out), "unreachable") || strings.Contains(string(out), "not permitted")) {
		t.Errorf("connect to the outside: %v: %s; want an immediate rejection", err, out)
	}
}
