// Package processtest starts a real, single-replica hosted control plane
// (etcd, kube-apiserver, controller-manager; no scheduler, no tunnel) for
// tests that need a real API server: server-side apply, managedFields and
// watches behave there exactly as in a tenant cluster. The binaries come
// from the release cache, which `make test` builds before the unit tests.
package processtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/releases/releasestest"
	"github.com/lotse/lotse/internal/supervisor"
	"github.com/lotse/lotse/internal/tasks"
)

// ControlPlane starts a control plane that lives until the test ends and
// returns its admin kubeconfig. Without the release built it fails in CI
// and skips elsewhere.
func ControlPlane(t testing.TB) []byte {
	t.Helper()
	return Start(t, nil).Kubeconfig
}

// Instance is a started control plane: its backend and spec (to converge
// again with another spec) and its admin kubeconfig.
type Instance struct {
	Backend    *process.Backend
	Spec       controlplane.Spec
	Kubeconfig []byte
}

// Start is ControlPlane with the spec changed by change (if not nil)
// before it starts.
func Start(t testing.TB, change func(*controlplane.Spec)) *Instance {
	t.Helper()
	bins := releasestest.Binaries(t)
	dir, err := os.MkdirTemp("", "lotse-cp-") // short: etcd's unix sockets live below
	if err != nil {
		t.Fatal(err)
	}
	sup := supervisor.New(supervisor.OwnerID(dir), supervisor.Options{})
	b := &process.Backend{StateDir: dir, Supervisor: sup}
	t.Cleanup(func() {
		sup.StopAll()
		os.RemoveAll(dir)
	})
	spec := controlplane.Spec{
		Key: "clusters/test/" + "cp", Name: "cp", Binaries: bins,
		PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/16", EncryptionProvider: "aescbc",
		WithoutScheduler: true, WithoutTunnel: true,
	}
	if change != nil {
		change(&spec)
	}
	in := &Instance{Backend: b, Spec: spec}
	in.Converge(t, spec)
	if in.Kubeconfig, err = b.AdminKubeconfig(spec); err != nil {
		t.Fatal(err)
	}
	return in
}

// Converge runs the backend's tasks for spec until they are all done.
func (in *Instance) Converge(t testing.TB, spec controlplane.Spec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	graph := in.Backend.Tasks(spec)
	for {
		results, err := tasks.Run(ctx, graph)
		if err != nil {
			t.Fatal(err)
		}
		if results.Done() {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("control plane not converged: %s", results.Describe())
		case <-time.After(100 * time.Millisecond):
		}
	}
	in.Spec = spec
}
