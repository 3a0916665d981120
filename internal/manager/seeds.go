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

// seedImages gives seeds the control planes' images, each built from the
// release's binary: pushed to the registry the manager was given, which
// every seed's nodes pull from, or else imported into the containerd of
// every machine of a seed that is a Lotse cluster of this host.
type seedImages struct {
	conn     *seedcontroller.Connector
	builder  *images.Builder
	provider *local.Provider
	// registry, if set, is where the images go, for every seed.
	registry *images.Repository

	mu sync.Mutex
	// loaded: when each seed (or the registry) last got each set of
	// images, and their references: building checks digests of large
	// binaries, and an import asks containerd (a push the registry), too
	// much for every reconcile.
	loaded map[string]loadedImages
	// pushed: the reference each build (by image and build key) was
	// pushed as; later checks ask the registry whether it still has it
	// rather than compress the layers again for the digest.
	pushed map[string]string
}

type loadedImages struct {
	at     time.Time
	pulled map[string]string
}

// seedImagesFresh is how long a load counts as done: a machine the seed
// gained since (or a registry that lost them) gets the images within
// this time.
const seedImagesFresh = time.Minute

func (s *seedImages) Load(ctx context.Context, seedName string, imgs []images.Image) (map[string]string, error) {
	key := "seed " + seedName
	if s.registry != nil {
		key = "registry"
	}
	for _, img := range imgs {
		key += " " + img.Ref()
	}
	s.mu.Lock()
	done, ok := s.loaded[key]
	s.mu.Unlock()
	if ok && time.Since(done.at) < seedImagesFresh {
		return done.pulled, nil
	}
	var pulled map[string]string
	var err error
	if s.registry != nil {
		pulled, err = s.push(ctx, imgs)
	} else {
		err = s.importInto(ctx, seedName, imgs)
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.loaded == nil {
		s.loaded = map[string]loadedImages{}
	}
	s.loaded[key] = loadedImages{at: time.Now(), pulled: pulled}
	s.mu.Unlock()
	return pulled, nil
}

// push puts the images into the registry and returns the references
// (by digest) the seeds' nodes pull.
func (s *seedImages) push(ctx context.Context, imgs []images.Image) (map[string]string, error) {
	pulled := map[string]string{}
	for _, img := range imgs {
		tar, err := s.builder.Ensure(ctx, img)
		if err != nil {
			return nil, err
		}
		stamp, err := s.builder.Stamp(img)
		if err != nil {
			return nil, err
		}
		build := img.Ref() + " " + stamp.Key
		s.mu.Lock()
		ref := s.pushed[build]
		s.mu.Unlock()
		if ref != "" {
			if has, err := s.registry.Has(ctx, ref); err != nil {
				return nil, err
			} else if has {
				pulled[img.Ref()] = ref
				continue
			}
		}
		if ref, err = s.registry.Push(ctx, tar, img); err != nil {
			return nil, err
		}
		s.mu.Lock()
		if s.pushed == nil {
			s.pushed = map[string]string{}
		}
		s.pushed[build] = ref
		s.mu.Unlock()
		pulled[img.Ref()] = ref
	}
	return pulled, nil
}

// importInto imports the images into the machines of a seed that is a
// Lotse cluster of this host.
func (s *seedImages) importInto(ctx context.Context, seedName string, imgs []images.Image) error {
	ref, isLotse, err := s.conn.LotseCluster(ctx, seedName)
	if err != nil {
		return err
	}
	if !isLotse || s.provider == nil {
		return fmt.Errorf("seed %s is not a Lotse cluster of this host: its nodes cannot be given the control-plane images; give the manager a registry its nodes pull from (--image-registry)", seedName)
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
		Images:      &seedImages{conn: conn, builder: &images.Builder{CacheDir: opts.Releases.Dir, Log: opts.BuildLog}, provider: lp, registry: opts.ImageRegistry},
		Networks:    processBackend,
		Locate:      locate,

		ControlPlaneImage:    opts.ControlPlaneImage,
		ImagePullCredentials: opts.ImagePullCredentials,
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
