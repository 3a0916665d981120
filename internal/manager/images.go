package manager

import (
	"context"
	"path/filepath"
	"sort"
	"sync"

	"github.com/lotse/lotse/internal/images"
)

// ExtraImagesDir holds image tarballs loaded into every node besides the
// release's own (a provider's air-gapped bundle, or the tests' images).
func ExtraImagesDir(cacheDir string) string { return filepath.Join(cacheDir, "images", "extra") }

// nodeImages builds each release's node images once, in the background, so
// that no reconcile blocks for the minutes a cold CoreDNS build takes.
type nodeImages struct {
	builder *images.Builder

	mu       sync.Mutex
	building map[string]bool
	failed   map[string]error
}

func (n *nodeImages) source(ctx context.Context, version string) (string, []string, bool, error) {
	set, err := images.Lookup(version)
	if err != nil {
		return "", nil, false, err
	}
	var tarballs []string
	ready := true
	for _, img := range set.All() {
		path, ok := n.builder.Built(img)
		if !ok {
			ready = false
			break
		}
		tarballs = append(tarballs, path)
	}
	if !ready {
		return "", nil, false, n.startBuild(ctx, version, set)
	}
	extra, _ := filepath.Glob(filepath.Join(ExtraImagesDir(n.builder.CacheDir), "*.tar"))
	sort.Strings(extra)
	return set.Pause.Ref(), append(tarballs, extra...), true, nil
}

func (n *nodeImages) startBuild(ctx context.Context, version string, set images.Set) error {
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
		_, err := n.builder.EnsureSet(context.WithoutCancel(ctx), set)
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.building, version)
		if err != nil {
			n.failed[version] = err
		}
	}()
	return nil
}
