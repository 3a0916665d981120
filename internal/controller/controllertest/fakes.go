// Package controllertest holds the fakes the controllers' unit tests share:
// a control-plane backend and a machine provider in memory, tenant clients
// made of client-go's fake clientsets, and a release store whose default
// release counts as built. Nothing here runs outside tests.
package controllertest

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/machine"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/tasks"
)

// FakeBackend is a control plane in memory: its one task ("control-plane")
// is done once Ready is set; it records deletions.
type FakeBackend struct {
	mu        sync.Mutex
	ready     bool
	deleted   []string
	snapshots int
}

// SetReady makes the control plane come up (or go down).
func (f *FakeBackend) SetReady(ready bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready = ready
}

// Deleted lists the keys of deleted control planes.
func (f *FakeBackend) Deleted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.deleted...)
}

// TaskName is the name of FakeBackend's one task.
const TaskName = "control-plane"

func (f *FakeBackend) isReady() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

func (f *FakeBackend) Tasks(controlplane.Spec) []tasks.Task {
	return []tasks.Task{{Name: TaskName, Run: func(context.Context) (bool, string, error) {
		return f.isReady(), "starting", nil
	}}}
}

func (f *FakeBackend) Status(context.Context, controlplane.Spec) controlplane.Status {
	ready := f.isReady()
	return controlplane.Status{Endpoint: "https://127.0.0.1:6443", APIServerAvailable: ready,
		Components: []controlplane.ComponentHealth{{Name: "kube-apiserver-0", Healthy: ready}}}
}

func (f *FakeBackend) AdminKubeconfig(controlplane.Spec) ([]byte, error) {
	return []byte("fake kubeconfig"), nil
}

func (f *FakeBackend) AddonServing(controlplane.Spec, string, []string) (controlplane.ServingCredentials, error) {
	return controlplane.ServingCredentials{CA: []byte("ca"), Cert: []byte("cert"), Key: []byte("key")}, nil
}

func (f *FakeBackend) TunnelCredentials(controlplane.Spec) (controlplane.TunnelCredentials, error) {
	return controlplane.TunnelCredentials{}, nil
}

func (f *FakeBackend) NodeAccess(controlplane.Spec) (controlplane.NodeAccess, error) {
	return controlplane.NodeAccess{NodesCIDR: "10.250.0.0/24", Gateway: "10.250.0.1", APIServer: "https://10.250.0.1:6443", APIPort: 6443}, nil
}

func (f *FakeBackend) EnsureNodeAccess(s controlplane.Spec) (controlplane.NodeAccess, error) {
	return f.NodeAccess(s)
}

func (f *FakeBackend) PKI(string) pki.ClusterPKI { return pki.ClusterPKI{Dir: "/pki"} }

func (f *FakeBackend) RestartComponent(context.Context, controlplane.Spec, string) error {
	return nil
}

// Snapshot writes a small stand-in for an etcd snapshot and counts the call.
func (f *FakeBackend) Snapshot(_ context.Context, spec controlplane.Spec, path string) error {
	f.mu.Lock()
	f.snapshots++
	f.mu.Unlock()
	return os.WriteFile(path, []byte("fake etcd snapshot of "+spec.Key), 0o600)
}

// Snapshots counts the snapshots taken.
func (f *FakeBackend) Snapshots() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snapshots
}

func (f *FakeBackend) BackupCredentials(controlplane.Spec) (map[string][]byte, error) {
	return map[string][]byte{}, nil
}

func (f *FakeBackend) Restore(context.Context, controlplane.Spec, controlplane.RestoreInput) error {
	return nil
}

func (f *FakeBackend) Delete(_ context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, key)
	return nil
}

func (f *FakeBackend) Stop(context.Context, string) error { return nil }

var _ controlplane.Backend = (*FakeBackend)(nil)

// FakeProvider makes machines in memory and records what it was asked.
type FakeProvider struct {
	mu      sync.Mutex
	ensured []machine.Spec
	deleted []machine.Spec
	stopped []machine.Spec
	serving bool
}

// SetServingCertificate says whether machines' kubelets have one.
func (f *FakeProvider) SetServingCertificate(ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.serving = ok
}

// Ensured lists the specs Ensure was called with.
func (f *FakeProvider) Ensured() []machine.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]machine.Spec(nil), f.ensured...)
}

// DeletedMachines lists the specs Delete was called with.
func (f *FakeProvider) DeletedMachines() []machine.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]machine.Spec(nil), f.deleted...)
}

func (f *FakeProvider) EnsureNetwork(context.Context, clusterref.Ref, machine.NetworkSpec) error {
	return nil
}

func (f *FakeProvider) RoutePodRange(context.Context, clusterref.Ref, int, string, string) error {
	return nil
}

func (f *FakeProvider) DeleteNetwork(context.Context, clusterref.Ref) error { return nil }

func (f *FakeProvider) Ensure(_ context.Context, s *machine.Spec) (machine.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ensured = append(f.ensured, *s)
	return machine.Status{Address: "10.250.0.10", ProviderID: "fake://" + s.Name, ProcessesReady: true, HasServingCertificate: f.serving}, nil
}

// StoppedMachines lists the specs Stop was called with.
func (f *FakeProvider) StoppedMachines() []machine.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]machine.Spec(nil), f.stopped...)
}

func (f *FakeProvider) Stop(_ context.Context, s *machine.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = append(f.stopped, *s)
	return nil
}

func (f *FakeProvider) Delete(_ context.Context, s *machine.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, *s)
	return nil
}

var _ machine.Provider = (*FakeProvider)(nil)

// FakeTenants hands out one fake clientset per cluster key and records
// which clusters were forgotten. It has no informers.
type FakeTenants struct {
	mu        sync.Mutex
	clients   map[string]*kubefake.Clientset
	forgotten []string
}

// Clientset returns the fake clientset of a cluster key.
func (f *FakeTenants) Clientset(key string) *kubefake.Clientset {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.clients == nil {
		f.clients = map[string]*kubefake.Clientset{}
	}
	if f.clients[key] == nil {
		f.clients[key] = kubefake.NewClientset()
	}
	return f.clients[key]
}

// Forgotten lists the keys passed to Forget.
func (f *FakeTenants) Forgotten() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.forgotten...)
}

func (f *FakeTenants) For(key string, _ []byte) (kubernetes.Interface, error) {
	return f.Clientset(key), nil
}

func (f *FakeTenants) Dynamic(string, []byte) (dynamic.Interface, error) { return nil, nil }

func (f *FakeTenants) Informers(string, []byte) (informers.SharedInformerFactory, context.Context, error) {
	return nil, nil, nil
}

func (f *FakeTenants) Forget(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgotten = append(f.forgotten, key)
}

// InstalledStore is a release store in a temporary directory in which the
// default release counts as built (stamp files and empty binaries).
func InstalledStore(t testing.TB) *releases.Store {
	t.Helper()
	s := releases.NewStore(t.TempDir())
	r := releases.Default()
	for d, files := range s.Dirs(r) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range append(files, ".complete") {
			if err := os.WriteFile(filepath.Join(d, f), []byte("{}"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}
