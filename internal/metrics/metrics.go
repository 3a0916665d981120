// Package metrics is what the manager tells Prometheus about the clusters
// it runs. State (clusters by phase, their conditions, machines) is read
// from the manager's cache at each scrape, so no series outlives its
// object; outcomes (backups, restores, hibernations, probes, repairs,
// alert notifications) are counted where they happen. Reconcile durations
// and errors come from controller-runtime's own metrics
// (controller_runtime_reconcile_time_seconds, ..._errors_total) on the same
// endpoint.
package metrics

import (
	"context"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

var (
	// BackupsTotal counts backups by result (success, failure).
	BackupsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lotse_backups_total", Help: "Cluster backups taken, by result.",
	}, []string{"namespace", "cluster", "result"})
	// BackupDuration is how long successful backups took.
	BackupDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "lotse_backup_duration_seconds", Help: "Time to take, seal and store a snapshot.",
		Buckets: prometheus.ExponentialBuckets(0.25, 2, 10),
	}, []string{"namespace", "cluster"})
	// RestoresTotal counts restores by result (success, refused).
	RestoresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lotse_restores_total", Help: "Cluster restores from snapshots, by result.",
	}, []string{"namespace", "cluster", "result"})
	// HibernationsTotal counts clusters gone to sleep and woken.
	HibernationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lotse_hibernations_total", Help: "Clusters hibernated (action=hibernate) and woken (action=wake).",
	}, []string{"namespace", "cluster", "action"})
	// ProbeDuration is the latency of the care controller's API probes.
	ProbeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "lotse_cluster_api_probe_duration_seconds", Help: "Latency of GET /readyz on each cluster's API endpoint.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10),
	}, []string{"namespace", "cluster"})
	// ProbeFailures counts API probes that failed.
	ProbeFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lotse_cluster_api_probe_failures_total", Help: "API probes that did not answer ok.",
	}, []string{"namespace", "cluster"})
	// CareRestarts counts control-plane components the care controller restarted.
	CareRestarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lotse_care_restarts_total", Help: "Hung control-plane components restarted by the care controller.",
	}, []string{"namespace", "cluster", "component"})
	// AlertsFiring is how many alerts fire now, by name.
	AlertsFiring = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lotse_alerts_firing", Help: "Alerts firing now, by name.",
	}, []string{"alertname"})
	// AlertNotifications counts webhook deliveries by result.
	AlertNotifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lotse_alert_notifications_total", Help: "Alertmanager webhook deliveries, by result (sent, failed).",
	}, []string{"result"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(BackupsTotal, BackupDuration, RestoresTotal, HibernationsTotal,
		ProbeDuration, ProbeFailures, CareRestarts, AlertsFiring, AlertNotifications)
}

// Names lists every metric Lotse exports itself (the example alerting
// rules and dashboard are checked against it).
var Names = []string{
	"lotse_clusters", "lotse_cluster_condition", "lotse_cluster_info", "lotse_machines",
	"lotse_backup_last_success_timestamp_seconds",
	"lotse_backups_total", "lotse_backup_duration_seconds", "lotse_restores_total", "lotse_hibernations_total",
	"lotse_cluster_api_probe_duration_seconds", "lotse_cluster_api_probe_failures_total",
	"lotse_care_restarts_total", "lotse_alerts_firing", "lotse_alert_notifications_total",
}

var (
	clustersDesc  = prometheus.NewDesc("lotse_clusters", "Clusters by phase.", []string{"phase"}, nil)
	conditionDesc = prometheus.NewDesc("lotse_cluster_condition", "A cluster's conditions: 1 for the status it has.",
		[]string{"namespace", "cluster", "condition", "status"}, nil)
	infoDesc = prometheus.NewDesc("lotse_cluster_info", "Each cluster's version, phase and HA.",
		[]string{"namespace", "cluster", "version", "phase", "ha"}, nil)
	machinesDesc = prometheus.NewDesc("lotse_machines", "Machines by cluster and phase.",
		[]string{"namespace", "cluster", "phase"}, nil)
	lastBackupDesc = prometheus.NewDesc("lotse_backup_last_success_timestamp_seconds", "When the newest snapshot of a cluster was taken.",
		[]string{"namespace", "cluster"}, nil)
)

// phases every scrape reports, so a phase that empties shows 0.
var phases = []lotsev1.ClusterPhase{lotsev1.PhasePending, lotsev1.PhaseCreating, lotsev1.PhaseRunning, lotsev1.PhaseUpdating,
	lotsev1.PhaseUnhealthy, lotsev1.PhaseDeleting, lotsev1.PhaseFailed, lotsev1.PhaseHibernating, lotsev1.PhaseHibernated,
	lotsev1.PhaseWaking, lotsev1.PhaseRestoring}

// StateCollector reports the clusters' and machines' state from a reader
// (the manager's cache) at each scrape.
type StateCollector struct {
	mu     sync.Mutex
	Reader client.Reader
}

// Describe sends the descriptors.
func (s *StateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{clustersDesc, conditionDesc, infoDesc, machinesDesc, lastBackupDesc} {
		ch <- d
	}
}

// Collect reads the objects and sends the gauges.
func (s *StateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx := context.Background()
	s.mu.Lock()
	reader := s.Reader
	s.mu.Unlock()
	if reader == nil {
		return
	}
	clusters := &lotsev1.ClusterList{}
	if err := reader.List(ctx, clusters); err != nil {
		ch <- prometheus.NewInvalidMetric(clustersDesc, err)
		return
	}
	byPhase := map[lotsev1.ClusterPhase]int{}
	for _, p := range phases {
		byPhase[p] = 0
	}
	for i := range clusters.Items {
		c := &clusters.Items[i]
		phase := c.Status.Phase
		if phase == "" {
			phase = lotsev1.PhasePending
		}
		byPhase[phase]++
		ch <- prometheus.MustNewConstMetric(infoDesc, prometheus.GaugeValue, 1, c.Namespace, c.Name,
			c.Status.KubernetesVersion, string(phase), strconv.FormatBool(c.Spec.ControlPlane.HighAvailability))
		for _, cond := range c.Status.Conditions {
			ch <- prometheus.MustNewConstMetric(conditionDesc, prometheus.GaugeValue, 1, c.Namespace, c.Name, cond.Type, string(cond.Status))
		}
		if b := c.Status.Backup; b != nil && b.LastSuccessTime != nil {
			ch <- prometheus.MustNewConstMetric(lastBackupDesc, prometheus.GaugeValue, float64(b.LastSuccessTime.Unix()), c.Namespace, c.Name)
		}
	}
	for p, n := range byPhase {
		ch <- prometheus.MustNewConstMetric(clustersDesc, prometheus.GaugeValue, float64(n), string(p))
	}
	machines := &lotsev1.MachineList{}
	if err := reader.List(ctx, machines); err != nil {
		ch <- prometheus.NewInvalidMetric(machinesDesc, err)
		return
	}
	type key struct{ ns, cluster, phase string }
	counts := map[key]int{}
	for _, m := range machines.Items {
		phase := string(m.Status.Phase)
		if phase == "" {
			phase = string(lotsev1.MachinePending)
		}
		counts[key{m.Namespace, m.Spec.Cluster, phase}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(n), k.ns, k.cluster, k.phase)
	}
}

var (
	registerOnce sync.Once
	state        = &StateCollector{}
)

// Register makes the manager's registry report the state read from
// reader (the last reader given, when a process runs several managers).
func Register(reader client.Reader) {
	state.mu.Lock()
	state.Reader = reader
	state.mu.Unlock()
	registerOnce.Do(func() { ctrlmetrics.Registry.MustRegister(state) })
}
