package process

import (
	"context"
	"time"

	"github.com/lotse/lotse/internal/controlplane"
)

// readinessWatchInterval is how often a starting API server is asked for
// /readyz by the backend itself: a local request to a loopback port,
// much cheaper than a reconcile of the cluster.
const readinessWatchInterval = 50 * time.Millisecond

// readinessWatchLimit ends a watch of an API server that does not become
// ready: the controller's own periodic look takes over.
const readinessWatchLimit = 3 * time.Minute

// SetOnReady sets what is called with a control plane's key as soon as a
// starting API server of it answers /readyz (nil: nothing), so the cluster
// controller reconciles the cluster at once instead of at its next look.
func (b *Backend) SetOnReady(f func(key string)) {
	if f == nil {
		b.onReady.Store(nil)
		return
	}
	b.onReady.Store(&f)
}

func (b *Backend) notifyReady(key string) {
	if f := b.onReady.Load(); f != nil {
		(*f)(key)
	}
}

// watchReadiness tells the onReady hook as soon as one of a control plane's API
// servers answers /readyz, so that the cluster is reported available
// without waiting for its next periodic reconcile. One watch runs per
// control plane at a time; Delete and Stop end it.
func (b *Backend) watchReadiness(key string, probe func(context.Context) []controlplane.ComponentHealth) {
	if b.onReady.Load() == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readinessWatchLimit)
	w := &readinessWatch{cancel: cancel}
	if _, running := b.readinessWatches.LoadOrStore(key, w); running {
		cancel()
		return
	}
	go func() {
		defer b.readinessWatches.CompareAndDelete(key, w)
		defer cancel()
		t := time.NewTicker(readinessWatchInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			probeCtx, done := context.WithTimeout(ctx, time.Second)
			ready := anyHealthy(probe(probeCtx))
			done()
			if ready && ctx.Err() == nil {
				b.notifyReady(key)
				return
			}
		}
	}()
}

// endReadinessWatch stops the readiness watch of a control plane, if
// one runs.
func (b *Backend) endReadinessWatch(key string) {
	if w, ok := b.readinessWatches.LoadAndDelete(key); ok {
		w.(*readinessWatch).cancel()
	}
}

// readinessWatch is one running watch (a pointer, so that a watch removes
// only its own entry).
type readinessWatch struct{ cancel context.CancelFunc }
