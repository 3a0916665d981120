package process

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/releases/releasestest"
	"github.com/lotse/lotse/internal/supervisor"
)

// realEtcd runs the etcd of a real single-replica control plane (binaries
// from the release cache, which `make test` builds before the unit tests)
// under a supervisor of its own, stopped when the test ends.
func realEtcd(t *testing.T) (*Backend, controlplane.Spec) {
	t.Helper()
	bins := releasestest.Binaries(t)
	dir, err := os.MkdirTemp("", "lotse-ops-") // short: etcd's unix sockets live below
	if err != nil {
		t.Fatal(err)
	}
	sup := supervisor.New(supervisor.OwnerID(dir), supervisor.Options{})
	b := &Backend{StateDir: dir, Supervisor: sup}
	t.Cleanup(func() {
		sup.StopAll()
		os.RemoveAll(dir)
	})
	spec := controlplane.Spec{Key: "clusters/default/ops", Name: "ops", Binaries: bins, ServiceCIDR: "10.96.0.0/16", WithoutTunnel: true}
	l, err := b.ensureLayout(spec)
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.ensurePKI(spec, l)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		ok, msg, err := b.ensureEtcd(ctx, spec, l, p)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return b, spec
		}
		select {
		case <-ctx.Done():
			t.Fatalf("etcd not healthy: %s", msg)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func TestSnapshotAndRestart(t *testing.T) {
	b, spec := realEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	snap := filepath.Join(t.TempDir(), "etcd.db")
	if err := b.Snapshot(ctx, spec, snap); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(snap)
	if err != nil || fi.Size() < 4096 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot %s: %v, %d bytes, mode %v", snap, err, fi.Size(), fi.Mode())
	}

	name := processName(spec.Key, CompEtcd, 0)
	before, ok := b.Supervisor.Status(name)
	if !ok || !before.Running {
		t.Fatalf("etcd not running: %+v", before)
	}
	if err := b.RestartComponent(ctx, spec, CompEtcd); err != nil {
		t.Fatal(err)
	}
	after, ok := b.Supervisor.Status(name)
	if !ok || !after.Running || after.PID == before.PID {
		t.Errorf("etcd after the restart: %+v (before: pid %d)", after, before.PID)
	}
	if hs := b.etcdHealth(ctx, mustLayout(t, b, spec), b.PKI(spec.Key)); !hs[0].Healthy {
		t.Errorf("etcd unhealthy after the restart: %s", hs[0].Message)
	}
	if err := b.RestartComponent(ctx, spec, "kube-nothing"); err == nil {
		t.Error("restarting an unknown component did not fail")
	}
}

func mustLayout(t *testing.T, b *Backend, spec controlplane.Spec) Layout {
	t.Helper()
	l, err := b.LoadLayout(spec.Key)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
