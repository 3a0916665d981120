package manager

import (
	"context"
	"fmt"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/clusterref"
	seedcontroller "github.com/lotse/lotse/internal/controller/seed"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/controlplane/seed"
	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/machine/local"
)

// seedImages loads control-plane images into seeds that are Lotse
// clusters of this host: each image is built from the release's binary
// and imported into the containerd of every machine of the seed.
type seedImages struct {
	conn     *seedcontroller.Connector
	builder  *images.Builder
	provider *local.Provider

	mu sync.Mutex
	// loaded: when each seed last got each set of images (by seed and
	// references): building checks digests of large binaries and an
	// import asks containerd, too much for every reconcile.
	loaded map[string]time.Time
}

// seedImagesFresh is how long a load counts as done: a machine the seed
// gained since gets the images within this time.
const seedImagesFresh = time.Minute

func (s *seedImages) Load(ctx context.Context, seedName string, imgs []images.Image) error {
	key := seedName
	for _, img := range imgs {
		key += " " + img.Ref()
	}
	s.mu.Lock()
	at, ok := s.loaded[key]
	s.mu.Unlock()
	if ok && time.Since(at) < seedImagesFresh {
		return nil
	}
	ref, isLotse, err := s.conn.LotseCluster(ctx, seedName)
	if err != nil {
		return err
	}
	if !isLotse || s.provider == nil {
		return fmt.Errorf("seed %s is not a Lotse cluster of this host: its nodes cannot be given the control-plane images (pushing them to a registry is not supported yet)", seedName)
	}
	var todo []local.ImportedImage
	for _, img := range imgs {
		tar, err := s.builder.Ensure(ctx, img)
		if err != nil {
			return err
		}
		stamp, err := s.builder.Stamp(img)
		if err != nil {
			return err
		}
		todo = append(todo, local.ImportedImage{Tarball: tar, Ref: img.Ref(), ID: stamp.ImageID})
	}
	n, err := s.provider.ImportImages(ctx, ref, todo)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("seed %s (cluster %s) has no running machine to load images into", seedName, ref.Key())
	}
	s.mu.Lock()
	if s.loaded == nil {
		s.loaded = map[string]time.Time{}
	}
	s.loaded[key] = time.Now()
	s.mu.Unlock()
	return nil
}

// withSeeds routes control planes that ask for a seed to the seed
// backend; the process backend keeps every other.
func withSeeds(opts *Options, conn *seedcontroller.Connector, provider any, locate seed.Locator) (controlplane.Backend, func(controlplane.Spec) string) {
	processBackend, ok := opts.Backend.(*process.Backend)
	if !ok {
		return opts.Backend, opts.EndpointTask
	}
	lp, _ := provider.(*local.Provider)
	seeds := &seed.Backend{
		StateDir:    processBackend.StateDir,
		Supervisor:  opts.Supervisor,
		LotseBinary: opts.LotseBinary,
		Seeds:       conn,
		Images:      &seedImages{conn: conn, builder: &images.Builder{CacheDir: opts.Releases.Dir, Log: opts.BuildLog}, provider: lp},
		Networks:    processBackend,
		Locate:      locate,

		ControlPlaneImage: opts.ControlPlaneImage,
	}
	router := &controlplane.Router{Local: processBackend, Seeds: seeds, SeedsOnly: opts.SeedsOnly}
	localEndpointTask := opts.EndpointTask // the caller's, if any: the closure must not see its own
	if localEndpointTask == nil {
		localEndpointTask = process.EndpointTask
	}
	endpointTask := func(spec controlplane.Spec) string {
		if opts.SeedsOnly || spec.Seed != "" || seeds.Hosts(spec.Key) {
			return seed.EndpointTask(spec)
		}
		return localEndpointTask(spec)
	}
	return router, endpointTask
}

// locateSeed finds the seed a control plane was placed on in its
// Cluster's status.
func locateSeed(c client.Reader) seed.Locator {
	return func(ctx context.Context, key string) (string, error) {
		ref, ok := clusterref.ParseKey(key)
		if !ok {
			return "", nil
		}
		cluster := &lotsev1.Cluster{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, cluster); err != nil {
			return "", client.IgnoreNotFound(err)
		}
		return cluster.Status.Seed, nil
	}
}
