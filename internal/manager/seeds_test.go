package manager

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/controlplane/seed"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/supervisor"
)

// withSeeds wraps the process backend in a router whose endpoint task
// follows where each control plane runs.
func TestWithSeedsEndpointTask(t *testing.T) {
	dir := t.TempDir()
	sup := supervisor.New(supervisor.OwnerID(dir), supervisor.Options{})
	for _, callers := range []func(controlplane.Spec) string{nil, func(controlplane.Spec) string { return "callers-own" }} {
		opts := &Options{Backend: process.New(dir, sup), Supervisor: sup, EndpointTask: callers, Releases: releases.NewStore(dir)}
		backend, endpointTask := withSeeds(opts, nil, nil, nil)
		if _, ok := backend.(*controlplane.Router); !ok {
			t.Fatalf("backend is %T, want a router", backend)
		}
		wantLocal := process.TaskAPIServer
		if callers != nil {
			wantLocal = "callers-own"
		}
		if got := endpointTask(controlplane.Spec{Key: "clusters/default/local"}); got != wantLocal {
			t.Errorf("local control plane: endpoint task %q, want %q", got, wantLocal)
		}
		if got := endpointTask(controlplane.Spec{Key: "clusters/default/new", Seed: "s"}); got != seed.TaskEndpoint {
			t.Errorf("control plane asking for a seed: endpoint task %q, want %q", got, seed.TaskEndpoint)
		}
		// Placed earlier: known by its layout even without spec.Seed.
		placed := filepath.Join(dir, "clusters", "default", "placed")
		if err := os.MkdirAll(placed, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(placed, seed.LayoutFile), []byte(`{"seed":"s"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := endpointTask(controlplane.Spec{Key: "clusters/default/placed"}); got != seed.TaskEndpoint {
			t.Errorf("control plane placed on a seed: endpoint task %q, want %q", got, seed.TaskEndpoint)
		}
	}
}
