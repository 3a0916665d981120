package netns

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// IPTables runs `iptables -w -t TABLE ARGS...` in namespace ns (the host's
// when ns is empty).
func IPTables(ctx context.Context, ns, table string, args ...string) error {
	argv := append([]string{"iptables", "-w", "-t", table}, args...)
	if ns != "" {
		argv = append([]string{"nsenter", "--net=" + Path(ns), "--"}, argv...)
	}
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables -t %s %s: %v: %s", table, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// EnsureChain makes chain in table hold exactly rules, in order: a chain
// that lacks one of them is flushed and refilled, so a chain an older
// version wrote is brought up to date.
func EnsureChain(ctx context.Context, ns, table, chain string, rules [][]string) error {
	_ = IPTables(ctx, ns, table, "-N", chain) // fails when it exists
	for _, rule := range rules {
		if IPTables(ctx, ns, table, append([]string{"-C", chain}, rule...)...) != nil {
			return refillChain(ctx, ns, table, chain, rules)
		}
	}
	return nil
}

func refillChain(ctx context.Context, ns, table, chain string, rules [][]string) error {
	if err := IPTables(ctx, ns, table, "-F", chain); err != nil {
		return err
	}
	for _, rule := range rules {
		if err := IPTables(ctx, ns, table, append([]string{"-A", chain}, rule...)...); err != nil {
			return err
		}
	}
	return nil
}

// EnsureJump makes sure a rule (typically a jump to a chain of ours) is in
// a built-in chain, inserting it first when it is missing.
func EnsureJump(ctx context.Context, ns, table, builtin string, rule ...string) error {
	if IPTables(ctx, ns, table, append([]string{"-C", builtin}, rule...)...) == nil {
		return nil
	}
	return IPTables(ctx, ns, table, append([]string{"-I", builtin, "1"}, rule...)...)
}

// DeleteJump removes every copy of a rule from a built-in chain.
func DeleteJump(ctx context.Context, ns, table, builtin string, rule ...string) {
	for i := 0; i < 10 && IPTables(ctx, ns, table, append([]string{"-D", builtin}, rule...)...) == nil; i++ {
		continue
	}
}

// DeleteChain flushes and removes a chain of ours.
func DeleteChain(ctx context.Context, ns, table, chain string) {
	_ = IPTables(ctx, ns, table, "-F", chain)
	_ = IPTables(ctx, ns, table, "-X", chain)
}
