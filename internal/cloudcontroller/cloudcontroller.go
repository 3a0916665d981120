// Package cloudcontroller runs the cloud controllers of tenant clusters
// inside Lotse's manager, for those whose control plane runs no cloud
// controller manager process of its own (control planes on seeds, and
// releases whose lotse-cloud-controller-manager is not built; see
// internal/cloudapi and docs/cloud.md): upstream's controllers from
// k8s.io/cloud-provider (cloud-node: a new node gets its provider ID,
// addresses, zone, region and instance type, and loses the uninitialized
// taint; cloud-node-lifecycle: a stopped machine's node gets the shutdown
// taint, a deleted machine's node is removed; service: LoadBalancer
// Services get balancers) with Lotse's provider. The balancers themselves
// are separate supervised processes, so they keep serving while the
// controllers restart.
package cloudcontroller

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	nodecontroller "k8s.io/cloud-provider/controllers/node"
	nodelifecycle "k8s.io/cloud-provider/controllers/nodelifecycle"
	servicecontroller "k8s.io/cloud-provider/controllers/service"
	"k8s.io/component-base/featuregate"
	controllersmetrics "k8s.io/component-base/metrics/prometheus/controllers"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/lotse/lotse/internal/cloudprovider"
	"github.com/lotse/lotse/internal/clusterref"
)

// Runner runs one set of cloud controllers per cluster.
type Runner struct {
	Machines      cloudprovider.Machines
	LoadBalancers cloudprovider.LoadBalancers
	// NodeMonitorPeriod is how often the lifecycle controller looks at
	// NotReady nodes (default 5 s).
	NodeMonitorPeriod time.Duration

	mu       sync.Mutex
	clusters map[string]*running
	metrics  *controllersmetrics.ControllerManagerMetrics
}

type running struct {
	cs     kubernetes.Interface
	region string
	cancel context.CancelFunc
	done   chan struct{}
}

// Ensure makes sure the cloud controllers of a cluster run with this
// client (a new client, e.g. after a new kubeconfig, restarts them).
func (r *Runner) Ensure(ctx context.Context, cluster clusterref.Ref, cs kubernetes.Interface, region string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := cluster.Key()
	if c, ok := r.clusters[key]; ok {
		if c.cs == cs && c.region == region {
			return
		}
		c.cancel()
		<-c.done
	}
	if r.clusters == nil {
		r.clusters = map[string]*running{}
		r.metrics = controllersmetrics.NewControllerManagerMetrics("lotse-cloud-controller-manager")
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &running{cs: cs, region: region, cancel: cancel, done: make(chan struct{})}
	r.clusters[key] = c
	logger := log.FromContext(ctx).WithValues("cluster", key, "component", "cloud-controller-manager")
	cloud := &cloudprovider.Cloud{Cluster: cluster, Machines: r.Machines, LoadBalancers: r.LoadBalancers, Region: region}
	go func() {
		defer close(c.done)
		// The controllers run until the cluster is forgotten; should they
		// stop or panic, they start again.
		for runCtx.Err() == nil {
			if err := r.run(log.IntoContext(runCtx, logger), cloud, cs, cluster.Name); err != nil {
				logger.Error(err, "cloud controllers stopped; starting them again")
			}
			select {
			case <-runCtx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

// Forget stops the cloud controllers of a deleted cluster and removes its
// balancers.
func (r *Runner) Forget(ctx context.Context, cluster clusterref.Ref) error {
	r.Stop(cluster)
	return r.LoadBalancers.DeleteCluster(ctx, cluster)
}

// Stop stops the cloud controllers of a cluster and keeps its balancers'
// records (hibernation: the next Ensure brings them back at their
// addresses).
func (r *Runner) Stop(cluster clusterref.Ref) {
	r.mu.Lock()
	c, ok := r.clusters[cluster.Key()]
	delete(r.clusters, cluster.Key())
	r.mu.Unlock()
	if ok {
		c.cancel()
		<-c.done
	}
}

func (r *Runner) run(ctx context.Context, cloud *cloudprovider.Cloud, cs kubernetes.Interface, clusterName string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory := informers.NewSharedInformerFactory(cs, 0)
	nodes := factory.Core().V1().Nodes()
	services := factory.Core().V1().Services()
	nodeCtrl, err := nodecontroller.NewCloudNodeController(nodes, cs, cloud, time.Minute, 1, 1)
	if err != nil {
		return err
	}
	period := r.NodeMonitorPeriod
	if period == 0 {
		period = 5 * time.Second
	}
	lifecycle, err := nodelifecycle.NewCloudNodeLifecycleController(nodes, cs, cloud, period)
	if err != nil {
		return err
	}
	svcCtrl, err := servicecontroller.New(cloud, cs, services, nodes, clusterName, featuregate.NewFeatureGate())
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	var wg sync.WaitGroup
	for _, run := range []func(){
		func() { nodeCtrl.RunWithContext(ctx, r.metrics) },
		func() { lifecycle.Run(ctx, r.metrics) },
		func() { svcCtrl.Run(ctx, 2, r.metrics) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); defer cancel(); run() }()
	}
	wg.Wait()
	return ctx.Err()
}
