package manager

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/controlplane/seed"
	"github.com/lotse/lotse/internal/gobuild"
	"github.com/lotse/lotse/internal/images"
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

// With a registry, any seed gets the images: they are pushed once (no
// seed connector is asked whether the seed is a Lotse cluster), and the
// pods run them by digest.
func TestSeedImagesPushed(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "echo")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./test/images/echo")
	build.Dir = filepath.Join("..", "..")
	build.Env = append(gobuild.Env(), "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build echo: %v\n%s", err, out)
	}
	var writes atomic.Int32
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writes.Add(1)
		}
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	s := &seedImages{builder: &images.Builder{CacheDir: t.TempDir()}, registry: &images.Repository{Name: host + "/lotse", PlainHTTP: true}}
	img := images.FromBinary("echo", "v1", bin, nil)
	ctx := context.Background()
	pulled, err := s.Load(ctx, "any-seed", []images.Image{img})
	if err != nil {
		t.Fatal(err)
	}
	if got := pulled[img.Ref()]; !strings.HasPrefix(got, host+"/lotse/echo:v1-") {
		t.Fatalf("pulled as %q", got)
	}
	if writes.Load() == 0 {
		t.Fatal("nothing was pushed")
	}
	before := writes.Load()
	again, err := s.Load(ctx, "another-seed", []images.Image{img})
	if err != nil || again[img.Ref()] != pulled[img.Ref()] {
		t.Errorf("second seed: %v, %v", again, err)
	}
	if writes.Load() != before {
		t.Errorf("the images were pushed again for a second seed")
	}
	// A minute later: the registry is asked whether it still has them,
	// nothing is pushed.
	s.mu.Lock()
	clear(s.loaded)
	s.mu.Unlock()
	again, err = s.Load(ctx, "any-seed", []images.Image{img})
	if err != nil || again[img.Ref()] != pulled[img.Ref()] {
		t.Errorf("after the cache expired: %v, %v", again, err)
	}
	if writes.Load() != before {
		t.Errorf("the images were pushed again after the cache expired")
	}
}
