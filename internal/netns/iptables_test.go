package netns

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// TestEnsureChain runs iptables in a network namespace of its own: a
// chain is made, an unchanged chain costs one listing, and a rule someone
// removed or added, a chain someone flushed or deleted, or a changed set of
// rules is repaired.
func TestEnsureChain(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: network namespaces and iptables")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := fmt.Sprintf("lotse-nstest-%d", os.Getpid())
	if err := Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		verified.Clear()
		if err := Delete(context.Background(), ns); err != nil {
			t.Error(err)
		}
	})
	var runs atomic.Int64
	orig := run
	run = func(ctx context.Context, argv []string) ([]byte, error) {
		runs.Add(1)
		return orig(ctx, argv)
	}
	t.Cleanup(func() { run = orig })

	const chain = "LOTSE-TEST"
	rules := [][]string{
		{"-d", "10.96.0.0/16", "-j", "RETURN"},
		{"-p", "tcp", "-d", "10.250.0.1", "--dport", "6443", "-j", "ACCEPT"},
		{"-m", "comment", "--comment", "lotse: the rest", "-j", "REJECT", "--reject-with", "icmp-net-unreachable"},
	}
	ensure := func(t *testing.T, rules [][]string) int64 {
		t.Helper()
		before := runs.Load()
		if err := EnsureChain(ctx, ns, "filter", chain, rules); err != nil {
			t.Fatal(err)
		}
		return runs.Load() - before
	}
	holds := func(t *testing.T, rules [][]string) {
		t.Helper()
		got, err := listChain(ctx, ns, "filter", chain)
		if err != nil {
			t.Fatal(err)
		}
		if countRules(got) != len(rules) {
			t.Fatalf("chain has %d rules, want %d:\n%s", countRules(got), len(rules), strings.Join(got, "\n"))
		}
		for _, r := range rules {
			if err := IPTables(ctx, ns, "filter", append([]string{"-C", chain}, r...)...); err != nil {
				t.Fatalf("rule %v missing: %v", r, err)
			}
		}
	}

	ensure(t, rules)
	holds(t, rules)
	if n := ensure(t, rules); n != 1 {
		t.Errorf("an unchanged chain took %d runs of iptables, want 1 (the listing)", n)
	}

	for _, tc := range []struct {
		name   string
		tamper func()
		want   [][]string
	}{
		{"a rule removed", func() { _ = IPTables(ctx, ns, "filter", append([]string{"-D", chain}, rules[1]...)...) }, rules},
		{"the chain flushed", func() { _ = IPTables(ctx, ns, "filter", "-F", chain) }, rules},
		{"the chain deleted", func() { _ = IPTables(ctx, ns, "filter", "-F", chain); _ = IPTables(ctx, ns, "filter", "-X", chain) }, rules},
		{"fewer rules wanted: the extra one goes", func() {}, rules[:2]},
		{"a rule someone added goes", func() { _ = IPTables(ctx, ns, "filter", "-A", chain, "-j", "ACCEPT") }, rules[:2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.tamper()
			if n := ensure(t, tc.want); n <= 1 {
				t.Errorf("a changed chain took %d runs: it was not checked rule by rule", n)
			}
			holds(t, tc.want)
			if n := ensure(t, tc.want); n != 1 {
				t.Errorf("after the repair, an unchanged chain took %d runs, want 1", n)
			}
		})
	}
}
