package controlplane

import (
	"context"
	"testing"

	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/tasks"
)

// recordingBackend notes which control planes it was asked about.
type recordingBackend struct {
	name   string
	hosted map[string]bool
	calls  []string
}

func (b *recordingBackend) note(key string) { b.calls = append(b.calls, key) }

func (b *recordingBackend) Hosts(key string) bool        { return b.hosted[key] }
func (b *recordingBackend) Tasks(spec Spec) []tasks.Task { b.note(spec.Key); return nil }
func (b *recordingBackend) Status(_ context.Context, spec Spec) Status {
	b.note(spec.Key)
	return Status{}
}
func (b *recordingBackend) AdminKubeconfig(spec Spec) ([]byte, error) {
	b.note(spec.Key)
	return nil, nil
}
func (b *recordingBackend) TunnelCredentials(spec Spec) (TunnelCredentials, error) {
	b.note(spec.Key)
	return TunnelCredentials{}, nil
}
func (b *recordingBackend) AddonServing(spec Spec, _ string, _ []string) (ServingCredentials, error) {
	b.note(spec.Key)
	return ServingCredentials{}, nil
}
func (b *recordingBackend) NodeAccess(spec Spec) (NodeAccess, error) {
	b.note(spec.Key)
	return NodeAccess{}, nil
}
func (b *recordingBackend) EnsureNodeAccess(spec Spec) (NodeAccess, error) {
	b.note(spec.Key)
	return NodeAccess{}, nil
}
func (b *recordingBackend) PKI(key string) pki.ClusterPKI {
	b.note(key)
	return pki.ClusterPKI{Dir: b.name}
}
func (b *recordingBackend) RestartComponent(_ context.Context, spec Spec, _ string) error {
	b.note(spec.Key)
	return nil
}
func (b *recordingBackend) Snapshot(_ context.Context, spec Spec, _ string) error {
	b.note(spec.Key)
	return nil
}
func (b *recordingBackend) BackupCredentials(spec Spec) (map[string][]byte, error) {
	b.note(spec.Key)
	return nil, nil
}
func (b *recordingBackend) Restore(_ context.Context, spec Spec, _ RestoreInput) error {
	b.note(spec.Key)
	return nil
}
func (b *recordingBackend) Delete(_ context.Context, key string) error { b.note(key); return nil }
func (b *recordingBackend) Stop(_ context.Context, key string) error   { b.note(key); return nil }

func TestRouter(t *testing.T) {
	ctx := context.Background()
	calls := map[string]func(r *Router, spec Spec){
		"Tasks":             func(r *Router, s Spec) { r.Tasks(s) },
		"Status":            func(r *Router, s Spec) { r.Status(ctx, s) },
		"AdminKubeconfig":   func(r *Router, s Spec) { _, _ = r.AdminKubeconfig(s) },
		"TunnelCredentials": func(r *Router, s Spec) { _, _ = r.TunnelCredentials(s) },
		"AddonServing":      func(r *Router, s Spec) { _, _ = r.AddonServing(s, "x", nil) },
		"NodeAccess":        func(r *Router, s Spec) { _, _ = r.NodeAccess(s) },
		"EnsureNodeAccess":  func(r *Router, s Spec) { _, _ = r.EnsureNodeAccess(s) },
		"PKI":               func(r *Router, s Spec) { r.PKI(s.Key) },
		"RestartComponent":  func(r *Router, s Spec) { _ = r.RestartComponent(ctx, s, "etcd") },
		"Snapshot":          func(r *Router, s Spec) { _ = r.Snapshot(ctx, s, "") },
		"BackupCredentials": func(r *Router, s Spec) { _, _ = r.BackupCredentials(s) },
		"Restore":           func(r *Router, s Spec) { _ = r.Restore(ctx, s, RestoreInput{}) },
		"Delete":            func(r *Router, s Spec) { _ = r.Delete(ctx, s.Key) },
		"Stop":              func(r *Router, s Spec) { _ = r.Stop(ctx, s.Key) },
	}
	tests := []struct {
		name string
		spec Spec
		// keyOnly: calls that know only the key still find the seed
		// when it was placed there.
		placed bool
		// seedsOnly: a manager without a host of its own.
		seedsOnly bool
		want      string
	}{
		{"local", Spec{Key: "clusters/a/local"}, false, false, "local"},
		{"placed on a seed", Spec{Key: "clusters/a/placed"}, true, false, "seeds"},
		// Seeds only: everything goes to the seeds, also before placement
		// and by key alone (a deletion finds the state there).
		{"seeds only, not placed yet", Spec{Key: "clusters/a/new"}, false, true, "seeds"},
		// Asking for a seed but not placed yet: calls with the spec go to
		// the seeds, which place it; calls with only the key stay local
		// (there is nothing anywhere yet).
		{"asking for a seed", Spec{Key: "clusters/a/new", Seed: "s"}, false, false, "seeds-or-local"},
	}
	for _, tt := range tests {
		for method, call := range calls {
			t.Run(tt.name+"/"+method, func(t *testing.T) {
				local := &recordingBackend{name: "local"}
				seeds := &recordingBackend{name: "seeds", hosted: map[string]bool{}}
				if tt.placed {
					seeds.hosted[tt.spec.Key] = true
				}
				r := &Router{Local: local, Seeds: seeds, SeedsOnly: tt.seedsOnly}
				call(r, tt.spec)
				want := tt.want
				if want == "seeds-or-local" {
					want = "seeds"
					if method == "PKI" || method == "Delete" || method == "Stop" {
						want = "local"
					}
				}
				got := local
				if len(seeds.calls) > 0 {
					got = seeds
				}
				if got.name != want || len(local.calls)+len(seeds.calls) != 1 {
					t.Errorf("went to %s (local %v, seeds %v), want %s", got.name, local.calls, seeds.calls, want)
				}
			})
		}
	}
	// Without a seed backend everything is local.
	local := &recordingBackend{name: "local"}
	(&Router{Local: local}).Tasks(Spec{Key: "k", Seed: "s"})
	if len(local.calls) != 1 {
		t.Error("a router without seeds does not use the local backend")
	}
}
