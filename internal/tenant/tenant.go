// Package tenant gives Lotse's controllers clients of tenant clusters, made
// from each cluster's admin kubeconfig and reused while it stays the same,
// and one shared informer factory per cluster, whose watches run until the
// cluster is forgotten (deleted) or its kubeconfig changes.
package tenant

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Access is what controllers need of tenant clusters; Clients implements
// it, tests use fake clientsets.
type Access interface {
	// For returns the clientset of the cluster key for the given kubeconfig.
	For(key string, kubeconfig []byte) (kubernetes.Interface, error)
	// Dynamic returns a dynamic client of the cluster key.
	Dynamic(key string, kubeconfig []byte) (dynamic.Interface, error)
	// Informers returns the cluster's shared informer factory and the
	// context its watches live in.
	Informers(key string, kubeconfig []byte) (informers.SharedInformerFactory, context.Context, error)
	// Forget drops the clients of a deleted cluster and stops its watches.
	Forget(key string)
}

var _ Access = (*Clients)(nil)

// Clients caches one clientset per cluster.
type Clients struct {
	mu    sync.Mutex
	byKey map[string]*entry
}

type entry struct {
	sum [32]byte
	cs  kubernetes.Interface
	dyn dynamic.Interface
	// informers is made on first use; cancel stops its watches.
	informers informers.SharedInformerFactory
	ctx       context.Context
	cancel    context.CancelFunc
}

// For returns the clientset of the cluster key for the given kubeconfig.
func (c *Clients) For(key string, kubeconfig []byte) (kubernetes.Interface, error) {
	e, err := c.entry(key, kubeconfig)
	if err != nil {
		return nil, err
	}
	return e.cs, nil
}

// Dynamic returns a dynamic client of the cluster key.
func (c *Clients) Dynamic(key string, kubeconfig []byte) (dynamic.Interface, error) {
	e, err := c.entry(key, kubeconfig)
	if err != nil {
		return nil, err
	}
	return e.dyn, nil
}

// Informers returns the cluster's shared informer factory and the context
// its watches live in (done when the cluster is forgotten or its kubeconfig
// changes). Callers register their informers, then call Start(ctx.Done()).
func (c *Clients) Informers(key string, kubeconfig []byte) (informers.SharedInformerFactory, context.Context, error) {
	e, err := c.entry(key, kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.informers == nil {
		e.informers = informers.NewSharedInformerFactory(e.cs, 10*time.Minute)
	}
	return e.informers, e.ctx, nil
}

func (c *Clients) entry(key string, kubeconfig []byte) (*entry, error) {
	sum := sha256.Sum256(kubeconfig)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok && e.sum == sum {
		return e, nil
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 15 * time.Second
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if c.byKey == nil {
		c.byKey = map[string]*entry{}
	}
	if old, ok := c.byKey[key]; ok {
		old.stop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &entry{sum: sum, cs: cs, dyn: dyn, ctx: ctx, cancel: cancel}
	c.byKey[key] = e
	return e, nil
}

// stop ends the entry's watches; the caller holds c.mu.
func (e *entry) stop() {
	e.cancel()
	if f := e.informers; f != nil {
		go f.Shutdown() // waits for the informers' goroutines to end
	}
}

// Forget drops the clients of a deleted cluster and stops its watches.
func (c *Clients) Forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		e.stop()
		delete(c.byKey, key)
	}
}
