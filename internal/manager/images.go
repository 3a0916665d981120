package manager

import (
	"context"
	"path/filepath"
	"sort"
	"sync"

	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/releases"
)

// ExtraImagesDir holds image tarballs loaded into every node besides the
// release's own (a provider's air-gapped bundle, or the tests' images).
func ExtraImagesDir(cacheDir string) string { return filepath.Join(cacheDir, "images", "extra") }

// nodeImages builds each release's node images once, in the background, so
// that no reconcile blocks for the minutes a cold CoreDNS build takes.
type nodeImages struct {
	builder *images.Builder
	// releases has the binaries that images of a release are made of
	// (the konnectivity agent).
	releases *releases.Store

	mu       sync.Mutex
	building map[string]bool
	failed   map[string]error
}

// NodeImages are the images every node of a release gets: the release's
// addons and node agents, the previous minor's CoreDNS (an upgrade runs
// it until CoreDNS moves on), and the konnectivity agent built from the
// release's binaries in store. `lotse release build --node-images`
// builds them ahead, as the manager does on a node's first need.
func NodeImages(version string, store *releases.Store) ([]images.Image, error) {
	set, err := images.Lookup(version)
	if err != nil {
		return nil, err
	}
	all := append(set.All(), images.NodeAgents()...)
	if prev, ok := images.PreviousMinor(version); ok && prev.CoreDNS.Ref() != set.CoreDNS.Ref() {
		all = append(all, prev.CoreDNS)
	}
	if agent, ok, err := agentImage(version, store); err != nil {
		return nil, err
	} else if ok {
		all = append(all, agent)
	}
	return all, nil
}

func (n *nodeImages) source(ctx context.Context, version string) (string, []string, bool, error) {
	set, err := images.Lookup(version)
	if err != nil {
		return "", nil, false, err
	}
	all, err := NodeImages(version, n.releases)
	if err != nil {
		return "", nil, false, err
	}
	var tarballs []string
	ready := true
	for _, img := range all {
		path, ok := n.builder.Built(img)
		if !ok {
			ready = false
			break
		}
		tarballs = append(tarballs, path)
	}
	if !ready {
		return "", nil, false, n.startBuild(ctx, version, all)
	}
	extra, _ := filepath.Glob(filepath.Join(ExtraImagesDir(n.builder.CacheDir), "*.tar"))
	sort.Strings(extra)
	return set.Pause.Ref(), append(tarballs, extra...), true, nil
}

// agentImage is the konnectivity agent's image of a release, if the release
// has a tunnel and its binaries are built.
func agentImage(version string, store *releases.Store) (images.Image, bool, error) {
	rel, err := releases.Lookup(version)
	if err != nil || rel.Konnectivity == "" || store == nil {
		return images.Image{}, false, err
	}
	bins, err := store.Binaries(rel)
	if err != nil {
		return images.Image{}, false, err
	}
	return images.KonnectivityAgent(rel.Konnectivity, bins.Path("konnectivity-agent")), true, nil
}

func (n *nodeImages) startBuild(ctx context.Context, version string, set []images.Image) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.failed[version]; err != nil {
		delete(n.failed, version) // report once, retry on the next call
		return err
	}
	if n.building[version] {
		return nil
	}
	if n.building == nil {
		n.building, n.failed = map[string]bool{}, map[string]error{}
	}
	n.building[version] = true
	go func() {
		var err error
		for _, img := range set {
			if _, err = n.builder.Ensure(context.WithoutCancel(ctx), img); err != nil {
				break
			}
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.building, version)
		if err != nil {
			n.failed[version] = err
		}
	}()
	return nil
}
