package local

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/lotse/lotse/internal/cloudprovider"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/servicelb"
	"github.com/lotse/lotse/internal/supervisor"
)

func TestAllocate(t *testing.T) {
	dir := t.TempDir()
	shop := clusterref.Ref{Namespace: "default", Name: "shop"}
	blog := clusterref.Ref{Namespace: "team", Name: "blog"}
	l := &LoadBalancers{
		Supervisor: supervisor.New(supervisor.OwnerID(dir), supervisor.Options{}),
		StateDir:   dir,
		PublicPool: netip.MustParsePrefix("10.254.254.0/30"), // two usable addresses
		NodesCIDR: func(clusterref.Ref) (netip.Prefix, error) {
			return netip.MustParsePrefix("10.250.7.0/24"), nil
		},
	}
	record := func(c clusterref.Ref, name, address string, internal bool) {
		t.Helper()
		if err := os.MkdirAll(l.dir(c), 0o700); err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(&record{Spec: servicelb.Spec{Address: address}, Internal: internal})
		if err := os.WriteFile(l.file(c, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	a, link, err := l.allocate(shop, false)
	if err != nil || a.String() != "10.254.254.1" || link != PublicInterface {
		t.Fatalf("first public address %s on %s: %v", a, link, err)
	}
	record(shop, "one", a.String(), false)
	// The pool is shared by all clusters.
	if a, _, err := l.allocate(blog, false); err != nil || a.String() != "10.254.254.2" {
		t.Fatalf("second public address %s: %v", a, err)
	}
	record(blog, "two", "10.254.254.2", false)
	if _, _, err := l.allocate(shop, false); !errors.Is(err, cloudprovider.ErrPoolExhausted) {
		t.Errorf("a full pool: %v", err)
	}
	// Internal addresses come from the top of the node network, below
	// the broadcast address, on the cluster's host link.
	a, link, err = l.allocate(shop, true)
	if err != nil || a.String() != "10.250.7.254" || link == PublicInterface || link == "" {
		t.Fatalf("internal address %s on %s: %v", a, link, err)
	}
	record(shop, "three", a.String(), true)
	if a, _, _ := l.allocate(shop, true); a.String() != "10.250.7.253" {
		t.Errorf("next internal address %s", a)
	}
	// Released addresses are handed out again.
	if err := os.Remove(filepath.Join(l.dir(shop), "one.json")); err != nil {
		t.Fatal(err)
	}
	if a, _, _ := l.allocate(blog, false); a.String() != "10.254.254.1" {
		t.Errorf("a released address: %s", a)
	}
	if addr, ok, err := l.Get(context.Background(), blog, "two"); err != nil || !ok || addr != "10.254.254.2" {
		t.Errorf("Get: %s %t %v", addr, ok, err)
	}
	if _, ok, err := l.Get(context.Background(), blog, "none"); err != nil || ok {
		t.Errorf("Get of a missing balancer: %t %v", ok, err)
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{"10.250.7.0/24": "10.250.7.255", "10.254.254.0/30": "10.254.254.3", "10.0.0.0/8": "10.255.255.255"} {
		if got := lastAddr(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("lastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}
