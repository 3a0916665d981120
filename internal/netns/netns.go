// Package netns creates and removes the network plumbing of local machines:
// named network namespaces, bridges, veth pairs, addresses and routes. It
// drives iproute2 (`ip`), which is what an operator would type and read
// back when debugging, and keeps every operation idempotent.
package netns

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// RunDir is where iproute2 keeps named network namespaces.
const RunDir = "/run/netns"

// Path is the bind-mount path of a named namespace.
func Path(name string) string { return filepath.Join(RunDir, name) }

// Exists reports whether a named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(Path(name))
	return err == nil
}

// ip runs `ip ARGS...` and returns its combined output.
func ip(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// in runs `ip -n NS ARGS...`.
func in(ctx context.Context, ns string, args ...string) (string, error) {
	if ns == "" {
		return ip(ctx, args...)
	}
	return ip(ctx, append([]string{"-n", ns}, args...)...)
}

// Create makes a named namespace with loopback up; existing ones are kept.
func Create(ctx context.Context, name string) error {
	if !Exists(name) {
		if _, err := ip(ctx, "netns", "add", name); err != nil && !Exists(name) {
			return err
		}
	}
	_, err := in(ctx, name, "link", "set", "lo", "up")
	return err
}

// Delete removes a named namespace; interfaces inside it go with it.
func Delete(ctx context.Context, name string) error {
	if !Exists(name) {
		return nil
	}
	if _, err := ip(ctx, "netns", "delete", name); err != nil && Exists(name) {
		return err
	}
	return nil
}

// List returns the named namespaces whose names start with prefix.
func List(prefix string) ([]string, error) {
	entries, err := os.ReadDir(RunDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// LinkExists reports whether an interface exists in ns ("" = this namespace).
func LinkExists(ctx context.Context, ns, link string) bool {
	_, err := in(ctx, ns, "link", "show", "dev", link)
	return err == nil
}

// EnsureBridge creates a bridge in ns and brings it up.
func EnsureBridge(ctx context.Context, ns, name string) error {
	if !LinkExists(ctx, ns, name) {
		if _, err := in(ctx, ns, "link", "add", name, "type", "bridge"); err != nil {
			return err
		}
	}
	_, err := in(ctx, ns, "link", "set", name, "up")
	return err
}

// EnsureVeth creates a veth pair: end a in namespace nsA, end b in nsB
// ("" = this namespace). Both ends come up. The pair is created in one call
// with both ends placed directly, so no temporary name can collide with a
// concurrent creation; a half-made pair is removed and made again.
func EnsureVeth(ctx context.Context, nsA, a, nsB, b string) error {
	hasA, hasB := LinkExists(ctx, nsA, a), LinkExists(ctx, nsB, b)
	if !hasA || !hasB {
		if hasA {
			if _, err := in(ctx, nsA, "link", "delete", a); err != nil {
				return err
			}
		}
		if hasB {
			if _, err := in(ctx, nsB, "link", "delete", b); err != nil {
				return err
			}
		}
		args := []string{"link", "add", a}
		if nsA != "" {
			args = append(args, "netns", nsA)
		}
		args = append(args, "type", "veth", "peer", "name", b)
		if nsB != "" {
			args = append(args, "netns", nsB)
		}
		if _, err := ip(ctx, args...); err != nil {
			return err
		}
	}
	if _, err := in(ctx, nsA, "link", "set", a, "up"); err != nil {
		return err
	}
	_, err := in(ctx, nsB, "link", "set", b, "up")
	return err
}

// SetMaster attaches link to a bridge in ns.
func SetMaster(ctx context.Context, ns, link, bridge string) error {
	_, err := in(ctx, ns, "link", "set", link, "master", bridge)
	return err
}

// EnsureAddress puts cidr (e.g. 10.250.0.1/24) on link in ns.
func EnsureAddress(ctx context.Context, ns, link, cidr string) error {
	out, err := in(ctx, ns, "-o", "addr", "show", "dev", link)
	if err != nil {
		return err
	}
	if strings.Contains(out, " "+cidr+" ") {
		return nil
	}
	_, err = in(ctx, ns, "addr", "add", cidr, "dev", link)
	return err
}

// ReplaceRoute sets a route in ns: `ip route replace DST via GW` (or dev when via is empty).
func ReplaceRoute(ctx context.Context, ns, dst, via, dev string) error {
	args := []string{"route", "replace", dst}
	if via != "" {
		args = append(args, "via", via)
	}
	if dev != "" {
		args = append(args, "dev", dev)
	}
	_, err := in(ctx, ns, args...)
	return err
}

// DeleteLink removes an interface if it exists.
func DeleteLink(ctx context.Context, ns, link string) error {
	if !LinkExists(ctx, ns, link) {
		return nil
	}
	_, err := in(ctx, ns, "link", "delete", link)
	return err
}

// Sysctl writes a sysctl inside ns (via /proc/sys as seen from the namespace).
func Sysctl(ctx context.Context, ns, key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	var cmd *exec.Cmd
	if ns == "" {
		return os.WriteFile(path, []byte(value), 0o644)
	}
	cmd = exec.CommandContext(ctx, "nsenter", "--net="+Path(ns), "--", "sh", "-c", "echo "+value+" > "+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sysctl %s=%s in %s: %v: %s", key, value, ns, err, out)
	}
	return nil
}

// DeleteAddress removes cidr from link in ns, if it is there.
func DeleteAddress(ctx context.Context, ns, link, cidr string) error {
	if !LinkExists(ctx, ns, link) {
		return nil
	}
	out, err := in(ctx, ns, "-o", "addr", "show", "dev", link)
	if err != nil || !strings.Contains(out, " "+cidr+" ") {
		return err
	}
	_, err = in(ctx, ns, "addr", "del", cidr, "dev", link)
	return err
}
