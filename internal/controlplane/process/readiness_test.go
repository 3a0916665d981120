package process

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lotse/lotse/internal/controlplane"
)

func TestWatchReadiness(t *testing.T) {
	var mu sync.Mutex
	var told []string
	b := &Backend{}
	b.SetOnReady(func(key string) {
		mu.Lock()
		defer mu.Unlock()
		told = append(told, key)
	})
	var probes atomic.Int32
	probe := func(context.Context) []controlplane.ComponentHealth {
		// Ready from the fourth look on.
		return []controlplane.ComponentHealth{{Name: "kube-apiserver-0", Healthy: probes.Add(1) > 3}}
	}
	b.watchReadiness("clusters/default/a", probe)
	b.watchReadiness("clusters/default/a", probe) // already watched: no second watch
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(told)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * readinessWatchInterval) // a second watch would tell again
	mu.Lock()
	if len(told) != 1 || told[0] != "clusters/default/a" {
		t.Errorf("told %v, want clusters/default/a once", told)
	}
	mu.Unlock()
	if _, running := b.readinessWatches.Load("clusters/default/a"); running {
		t.Error("the watch still runs after it told")
	}

	// A watch that is ended (the control plane is deleted or stopped)
	// tells nothing.
	never := func(context.Context) []controlplane.ComponentHealth {
		return []controlplane.ComponentHealth{{Name: "kube-apiserver-0"}}
	}
	b.watchReadiness("clusters/default/b", never)
	b.endReadinessWatch("clusters/default/b")
	if _, running := b.readinessWatches.Load("clusters/default/b"); running {
		t.Error("the watch of b still registered after it was ended")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(told) != 1 {
		t.Errorf("told %v after b's watch was ended", told)
	}
}

func TestWatchReadinessWithoutHook(t *testing.T) {
	b := &Backend{}
	b.watchReadiness("clusters/default/a", func(context.Context) []controlplane.ComponentHealth { return nil })
	if _, running := b.readinessWatches.Load("clusters/default/a"); running {
		t.Error("a watch runs although nobody listens")
	}
}
