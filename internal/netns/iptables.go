package netns

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
)

// run executes argv and returns its combined output (a variable so that
// tests can count what runs).
var run = func(ctx context.Context, argv []string) ([]byte, error) {
	return exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
}

// iptables runs `iptables -w -t TABLE ARGS...` in namespace ns (the
// host's when ns is empty) and returns its output.
func iptables(ctx context.Context, ns, table string, args ...string) ([]byte, error) {
	argv := append([]string{"iptables", "-w", "-t", table}, args...)
	if ns != "" {
		argv = append([]string{"nsenter", "--net=" + Path(ns), "--"}, argv...)
	}
	out, err := run(ctx, argv)
	if err != nil {
		return out, fmt.Errorf("iptables -t %s %s: %v: %s", table, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// IPTables runs `iptables -w -t TABLE ARGS...` in namespace ns (the host's
// when ns is empty).
func IPTables(ctx context.Context, ns, table string, args ...string) error {
	_, err := iptables(ctx, ns, table, args...)
	return err
}

// verifiedChain is how iptables listed a chain right after it was found
// or made to hold the rules with the given fingerprint.
type verifiedChain struct {
	rules   string
	listing []string
}

// verified remembers, by namespace, table and chain, the listing of each
// chain EnsureChain last verified. A later EnsureChain of the same rules
// lists the chain once and is done when nothing changed, instead of
// running one `iptables -C` per rule: machines are ensured every second
// while they start, and each iptables run loads the whole table.
var verified sync.Map // string -> verifiedChain

func chainKey(ns, table, chain string) string { return ns + "\x00" + table + "\x00" + chain }

func fingerprint(rules [][]string) string {
	var b strings.Builder
	for _, r := range rules {
		b.WriteString(strings.Join(r, "\x00"))
		b.WriteString("\n")
	}
	return b.String()
}

// listChain is `iptables -S CHAIN`: the chain's rules as iptables writes
// them (its own canonical form, not necessarily the words they were added
// with).
func listChain(ctx context.Context, ns, table, chain string) ([]string, error) {
	out, err := iptables(ctx, ns, table, "-S", chain)
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n"), nil
}

// EnsureChain makes chain in table hold exactly rules, in order: a chain
// that lacks one of them is flushed and refilled, so a chain an older
// version wrote is brought up to date.
func EnsureChain(ctx context.Context, ns, table, chain string, rules [][]string) error {
	key, fp := chainKey(ns, table, chain), fingerprint(rules)
	if v, ok := verified.Load(key); ok && v.(verifiedChain).rules == fp {
		// Unchanged since it was verified (a chain that is gone, or that
		// anyone changed, lists differently and is checked rule by rule).
		if got, err := listChain(ctx, ns, table, chain); err == nil && slices.Equal(got, v.(verifiedChain).listing) {
			return nil
		}
	}
	verified.Delete(key)
	_ = IPTables(ctx, ns, table, "-N", chain) // fails when it exists
	complete := true
	for _, rule := range rules {
		if IPTables(ctx, ns, table, append([]string{"-C", chain}, rule...)...) != nil {
			complete = false
			break
		}
	}
	// Rules beyond ours (an older version's, or anybody's) go too.
	listing, err := listChain(ctx, ns, table, chain)
	if !complete || err != nil || countRules(listing) != len(rules) {
		if err := refillChain(ctx, ns, table, chain, rules); err != nil {
			return err
		}
		if listing, err = listChain(ctx, ns, table, chain); err != nil {
			return nil // verified again next time
		}
	}
	// Remembered only when the listing has exactly a rule for each of
	// ours (a change between the refill and the listing is caught next
	// time).
	if countRules(listing) == len(rules) {
		verified.Store(key, verifiedChain{rules: fp, listing: listing})
	}
	return nil
}

func countRules(listing []string) int {
	n := 0
	for _, l := range listing {
		if strings.HasPrefix(l, "-A ") {
			n++
		}
	}
	return n
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
	verified.Delete(chainKey(ns, table, chain))
	_ = IPTables(ctx, ns, table, "-F", chain)
	_ = IPTables(ctx, ns, table, "-X", chain)
}
