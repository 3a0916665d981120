// Package tenant gives Lotse's controllers clients of tenant clusters, made
// from each cluster's admin kubeconfig and reused while it stays the same.
package tenant

import (
	"crypto/sha256"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Clients caches one clientset per cluster.
type Clients struct {
	mu    sync.Mutex
	byKey map[string]entry
}

type entry struct {
	sum [32]byte
	cs  kubernetes.Interface
	dyn dynamic.Interface
}

// For returns the clientset of the cluster key for the given kubeconfig.
func (c *Clients) For(key string, kubeconfig []byte) (kubernetes.Interface, error) {
	e, err := c.entry(key, kubeconfig)
	return e.cs, err
}

// Dynamic returns a dynamic client of the cluster key.
func (c *Clients) Dynamic(key string, kubeconfig []byte) (dynamic.Interface, error) {
	e, err := c.entry(key, kubeconfig)
	return e.dyn, err
}

func (c *Clients) entry(key string, kubeconfig []byte) (entry, error) {
	sum := sha256.Sum256(kubeconfig)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok && e.sum == sum {
		return e, nil
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return entry{}, err
	}
	cfg.Timeout = 15 * time.Second
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return entry{}, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return entry{}, err
	}
	if c.byKey == nil {
		c.byKey = map[string]entry{}
	}
	e := entry{sum: sum, cs: cs, dyn: dyn}
	c.byKey[key] = e
	return e, nil
}

// Forget drops the client of a deleted cluster.
func (c *Clients) Forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byKey, key)
}
