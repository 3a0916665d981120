// Package care looks after running clusters between reconciles, as
// Gardener's care controller does. Every interval it probes each cluster's
// API endpoint (latency into a metric) and its control-plane components;
// when what it sees disagrees with the cluster's conditions it asks the
// cluster controller to look now, so conditions follow a fault within one
// interval even when no process exited. A component that stays unhealthy
// while what it depends on is healthy (a hung process the supervisor cannot
// see) is restarted. Conditions that stay False past a threshold, and
// failed backups, become alerts posted to Alertmanager-compatible webhook
// receivers, and are resolved there when the cluster is healthy again.
package care

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/clusterref"
	clustercontroller "github.com/lotse/lotse/internal/controller/cluster"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/metrics"
	"github.com/lotse/lotse/internal/releases"
)

// Defaults.
const (
	DefaultInterval       = 15 * time.Second
	DefaultAlertAfter     = 5 * time.Minute
	DefaultRepeatInterval = time.Hour
	DefaultRestartAfter   = 3 * time.Minute
	probeTimeout          = 5 * time.Second
	restartTimeout        = 3 * time.Minute
	parallelProbes        = 8
)

// Controller is the care controller (a manager Runnable).
type Controller struct {
	Client   client.Client
	Backend  controlplane.Backend
	Releases *releases.Store
	// CloudAPI, as the cluster controller's: the clusters' own cloud
	// controller managers are part of their control planes' health.
	CloudAPI clustercontroller.CloudAPI
	Recorder events.EventRecorder
	// Notifier delivers alerts (nil: alerts only show in metrics and events).
	Notifier Notifier
	// Refresh asks the cluster controller to reconcile a cluster now.
	Refresh func(clusterref.Ref)
	// Interval between looks (default 15 s).
	Interval time.Duration
	// AlertAfter is how long a condition stays False before it alerts
	// (default 5 min).
	AlertAfter time.Duration
	// RepeatInterval re-sends alerts that still fire (default 1 h).
	RepeatInterval time.Duration
	// RestartAfter is how long a component stays unhealthy, with what it
	// depends on healthy, before it is restarted (default 3 min; negative:
	// never).
	RestartAfter time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time

	mu         sync.Mutex
	active     map[string]*tracked
	unhealthy  map[string]time.Time
	restarting map[string]bool
	probes     map[string]*probeClient
}

type tracked struct {
	alert     Alert
	cluster   *lotsev1.Cluster
	delivered bool
	lastSent  time.Time
}

type probeClient struct {
	sum    [32]byte
	client *http.Client
	url    string
}

// NeedLeaderElection: only the leading manager probes, repairs and alerts.
func (c *Controller) NeedLeaderElection() bool { return true }

func (c *Controller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Start looks every interval until ctx ends.
func (c *Controller) Start(ctx context.Context) error {
	t := time.NewTicker(orDefault(c.Interval, DefaultInterval))
	defer t.Stop()
	for {
		c.Tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick is one look at every cluster.
func (c *Controller) Tick(ctx context.Context) {
	clusters := &lotsev1.ClusterList{}
	if err := c.Client.List(ctx, clusters); err != nil {
		log.FromContext(ctx).Error(err, "care: list clusters")
		return
	}
	now := c.now()
	sem := make(chan struct{}, parallelProbes)
	var wg sync.WaitGroup
	looked := map[string]bool{}
	for i := range clusters.Items {
		cl := &clusters.Items[i]
		if quiet(cl) || cl.Status.Endpoint == "" {
			continue
		}
		looked[clusterref.Ref{Namespace: cl.Namespace, Name: cl.Name}.Key()] = true
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.look(ctx, cl, now)
		}()
	}
	wg.Wait()
	c.forgetExcept(looked)
	var firing []Alert
	byFingerprint := map[string]*lotsev1.Cluster{}
	for i := range clusters.Items {
		for _, a := range Evaluate(&clusters.Items[i], now, orDefault(c.AlertAfter, DefaultAlertAfter)) {
			firing = append(firing, a)
			byFingerprint[a.Fingerprint()] = &clusters.Items[i]
		}
	}
	c.alerts(ctx, firing, byFingerprint, now)
}

// look probes one cluster, asks for a reconcile when its conditions are
// out of date and restarts hung components.
func (c *Controller) look(ctx context.Context, cl *lotsev1.Cluster, now time.Time) {
	ref := clusterref.Ref{Namespace: cl.Namespace, Name: cl.Name}
	// The whole spec, as the cluster controller makes it: a restart renders
	// the component's flags from it (service and pod ranges, encryption).
	var bins releases.Binaries
	rel, relErr := releases.Lookup(cl.Status.KubernetesVersion)
	if relErr == nil && c.Releases != nil {
		if b, err := c.Releases.Binaries(rel); err == nil {
			bins = b
		}
	}
	spec := clustercontroller.SpecFor(cl, bins)
	if relErr == nil && c.CloudAPI != nil {
		// Its health counts (as the cluster controller counts it). Care
		// only reads the access the cluster controller made: without
		// it, the probe goes on without the component.
		_ = clustercontroller.WithCloudController(cl, &spec, rel, c.Releases, c.CloudAPI.Lookup)
	}
	ok, latency := c.probe(ctx, spec)
	metrics.ProbeDuration.WithLabelValues(cl.Namespace, cl.Name).Observe(latency.Seconds())
	if !ok {
		metrics.ProbeFailures.WithLabelValues(cl.Namespace, cl.Name).Inc()
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	st := c.Backend.Status(pctx, spec)
	cancel()
	stale := meta.IsStatusConditionTrue(cl.Status.Conditions, lotsev1.ConditionAPIServerAvailable) != ok ||
		meta.IsStatusConditionTrue(cl.Status.Conditions, lotsev1.ConditionControlPlaneHealthy) != st.Healthy()
	if stale && c.Refresh != nil {
		c.Refresh(ref)
	}
	c.repair(ctx, cl, spec, st, now)
}

// probe GETs /readyz on the cluster's endpoint with its admin credentials.
func (c *Controller) probe(ctx context.Context, spec controlplane.Spec) (bool, time.Duration) {
	pc, err := c.probeClient(spec)
	if err != nil {
		return false, 0
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pc.url, nil)
	if err != nil {
		return false, 0
	}
	start := time.Now()
	resp, err := pc.client.Do(req)
	took := time.Since(start)
	if err != nil {
		return false, took
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, took
}

func (c *Controller) probeClient(spec controlplane.Spec) (*probeClient, error) {
	kubeconfig, err := c.Backend.AdminKubeconfig(spec)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(kubeconfig)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.probes == nil {
		c.probes = map[string]*probeClient{}
	}
	if pc := c.probes[spec.Key]; pc != nil && pc.sum == sum {
		return pc, nil
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	pc := &probeClient{sum: sum, client: hc, url: strings.TrimSuffix(cfg.Host, "/") + "/readyz"}
	c.probes[spec.Key] = pc
	return pc, nil
}

var instanceSuffix = regexp.MustCompile(`-\d+$`)

// rotating says whether a credential rotation rolls the control plane.
func rotating(cl *lotsev1.Cluster) bool {
	if cl.Status.Credentials == nil {
		return false
	}
	for _, rs := range []*lotsev1.RotationStatus{cl.Status.Credentials.Rotation.ServiceAccountKey, cl.Status.Credentials.Rotation.EtcdEncryptionKey} {
		if rs != nil && (rs.Phase == lotsev1.RotationPreparing || rs.Phase == lotsev1.RotationCompleting) {
			return true
		}
	}
	return false
}

// forgetExcept drops what is remembered of clusters not looked at (quiet,
// hibernated, restoring, gone): their unhealthy-since times would restart
// a component at once when they come back, and their probe clients leak.
func (c *Controller) forgetExcept(looked map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key := range c.unhealthy {
		if ref, ok := clusterref.ParseKey(key); !ok || !looked[ref.Key()] {
			delete(c.unhealthy, key)
		}
	}
	for key := range c.probes {
		if !looked[key] {
			delete(c.probes, key)
		}
	}
}

// repair restarts components unhealthy for RestartAfter while their
// dependencies were healthy: etcd members on their own, API servers when
// etcd is healthy, the rest when etcd and the API servers are.
func (c *Controller) repair(ctx context.Context, cl *lotsev1.Cluster, spec controlplane.Spec, st controlplane.Status, now time.Time) {
	after := orDefault(c.RestartAfter, DefaultRestartAfter)
	unhealthyComponent := map[string]bool{}
	for _, h := range st.Components {
		if !h.Healthy {
			unhealthyComponent[instanceSuffix.ReplaceAllString(h.Name, "")] = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unhealthy == nil {
		c.unhealthy, c.restarting = map[string]time.Time{}, map[string]bool{}
	}
	if (cl.Status.Phase != lotsev1.PhaseRunning && cl.Status.Phase != lotsev1.PhaseUnhealthy) || cl.Status.Upgrade != nil ||
		cl.Status.ObservedGeneration != cl.Generation || rotating(cl) {
		// A change is on its way: its own rollout owns the processes, and
		// the time until a restart starts again after it.
		for key := range c.unhealthy {
			if strings.HasPrefix(key, spec.Key+"/") {
				delete(c.unhealthy, key)
			}
		}
		return
	}
	for _, h := range st.Components {
		key := spec.Key + "/" + h.Name
		if h.Healthy {
			delete(c.unhealthy, key)
			continue
		}
		component := instanceSuffix.ReplaceAllString(h.Name, "")
		etcdDown := unhealthyComponent["etcd"] || unhealthyComponent["etcd-shared"]
		blocked := false
		switch component {
		case "etcd":
		case "etcd-shared":
			// The shared datastore is no one cluster's to restart: its
			// supervisor restarts it when it exits, and every cluster on
			// it reports it meanwhile.
			blocked = true
		case "kube-apiserver":
			blocked = etcdDown
		case "loadbalancer":
			blocked = true // its health is the API servers' behind it
		default:
			blocked = etcdDown || unhealthyComponent["kube-apiserver"]
		}
		since, seen := c.unhealthy[key]
		if !seen || blocked {
			// The time counts only while what the component depends on is
			// healthy: an API server that waited for a frozen etcd gets
			// its whole grace once etcd is back, not a restart at once.
			c.unhealthy[key] = now
			continue
		}
		if after < 0 || now.Sub(since) < after || spec.Binaries.Release.Version == "" ||
			c.restarting[spec.Key+"/"+component] {
			continue
		}
		c.restarting[spec.Key+"/"+component] = true
		c.unhealthy[key] = now
		metrics.CareRestarts.WithLabelValues(cl.Namespace, cl.Name, component).Inc()
		c.event(cl, corev1.EventTypeWarning, "ComponentRestarted",
			"%s failed its health check for %s (%s); restarting %s", h.Name, now.Sub(since).Round(time.Second), h.Message, component)
		go func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restartTimeout)
			defer cancel()
			if err := c.Backend.RestartComponent(rctx, spec, component); err != nil {
				log.FromContext(ctx).Error(err, "care: restart", "cluster", spec.Key, "component", component)
			}
			c.mu.Lock()
			delete(c.restarting, spec.Key+"/"+component)
			c.mu.Unlock()
			if c.Refresh != nil {
				c.Refresh(clusterref.Ref{Namespace: cl.Namespace, Name: cl.Name})
			}
		}()
	}
}

// alerts sends what started firing, what still fires past the repeat
// interval and what was resolved; undelivered changes are sent again at
// the next look.
func (c *Controller) alerts(ctx context.Context, firing []Alert, clusters map[string]*lotsev1.Cluster, now time.Time) {
	c.mu.Lock()
	if c.active == nil {
		c.active = map[string]*tracked{}
	}
	repeat := orDefault(c.RepeatInterval, DefaultRepeatInterval)
	current := map[string]bool{}
	groups := map[string][]*tracked{}
	group := func(t *tracked) string { return t.alert.Labels["namespace"] + "/" + t.alert.Labels["cluster"] }
	for _, a := range firing {
		fp := a.Fingerprint()
		current[fp] = true
		t, known := c.active[fp]
		if !known {
			t = &tracked{alert: a, cluster: clusters[fp]}
			c.active[fp] = t
			c.event(t.cluster, corev1.EventTypeWarning, "AlertFiring", "%s: %s", a.Labels["alertname"], a.Annotations["summary"])
		} else {
			t.alert.Annotations, t.cluster = a.Annotations, clusters[fp]
			if !t.alert.EndsAt.IsZero() {
				// Firing again before its end was delivered: it goes on.
				t.alert.EndsAt, t.delivered = time.Time{}, false
			}
		}
		if !t.delivered || now.Sub(t.lastSent) >= repeat {
			groups[group(t)] = append(groups[group(t)], t)
		}
	}
	for fp, t := range c.active {
		if current[fp] {
			continue
		}
		if t.alert.EndsAt.IsZero() {
			t.alert.EndsAt = now
			t.delivered = false
			c.event(t.cluster, corev1.EventTypeNormal, "AlertResolved", "%s resolved", t.alert.Labels["alertname"])
		}
		if !t.delivered {
			groups[group(t)] = append(groups[group(t)], t)
		}
	}
	counts := map[string]int{AlertConditionFalse: 0, AlertBackupFailed: 0}
	for _, a := range firing {
		counts[a.Labels["alertname"]]++
	}
	c.mu.Unlock()
	for name, n := range counts {
		metrics.AlertsFiring.WithLabelValues(name).Set(float64(n))
	}

	for _, ts := range groups {
		alerts := make([]Alert, 0, len(ts))
		for _, t := range ts {
			alerts = append(alerts, t.alert)
		}
		var err error
		if c.Notifier != nil {
			err = c.Notifier.Notify(ctx, alerts)
		}
		result := "sent"
		if err != nil {
			result = "failed"
			log.FromContext(ctx).Error(err, "care: alert delivery failed; trying again at the next look")
		}
		metrics.AlertNotifications.WithLabelValues(result).Add(float64(len(alerts)))
		c.mu.Lock()
		for _, t := range ts {
			if err != nil {
				continue
			}
			t.delivered, t.lastSent = true, now
			if !t.alert.EndsAt.IsZero() {
				delete(c.active, t.alert.Fingerprint())
			}
		}
		c.mu.Unlock()
	}
}

// CheckWebhookURL refuses a receiver URL that is not http(s).
func CheckWebhookURL(u string) error {
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return fmt.Errorf("--alert-webhook %q: give the receiver's URL, http:// or https://", u)
	}
	return nil
}

func (c *Controller) event(cl *lotsev1.Cluster, kind, reason, note string, args ...any) {
	if c.Recorder != nil && cl != nil {
		c.Recorder.Eventf(cl, nil, kind, reason, "Care", note, args...)
	}
}
