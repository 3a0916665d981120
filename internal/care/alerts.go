package care

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// Alert names.
const (
	// AlertConditionFalse: one of a cluster's health conditions has been
	// False for longer than the threshold.
	AlertConditionFalse = "LotseClusterConditionFalse"
	// AlertBackupFailed: the cluster's last backup failed.
	AlertBackupFailed = "LotseClusterBackupFailed"
)

// WatchedConditions are the conditions whose staying False raises an alert.
var WatchedConditions = []string{
	lotsev1.ConditionAPIServerAvailable, lotsev1.ConditionControlPlaneHealthy,
	lotsev1.ConditionEveryNodeReady, lotsev1.ConditionSystemComponentsHealthy,
}

// Alert is one alert, firing or resolved, in Alertmanager's terms.
type Alert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
}

// Fingerprint identifies an alert by its labels.
func (a Alert) Fingerprint() string {
	keys := make([]string, 0, len(a.Labels))
	for k := range a.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\x00", k, a.Labels[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Resolved says whether the alert has ended.
func (a Alert) Resolved() bool { return !a.EndsAt.IsZero() }

// quiet says whether a cluster is where health alerts mean nothing: on
// its way up, to sleep, asleep, restoring or going away.
// A restore is quiet for restoreQuiet at most: one that hangs longer (a
// control plane that does not come back) alerts.
func quiet(c *lotsev1.Cluster) bool {
	switch c.Status.Phase {
	case "", lotsev1.PhasePending, lotsev1.PhaseCreating, lotsev1.PhaseHibernating, lotsev1.PhaseHibernated,
		lotsev1.PhaseWaking, lotsev1.PhaseDeleting:
		return true
	case lotsev1.PhaseRestoring:
		rs := c.Status.Restore
		return rs == nil || rs.StartTime == nil || time.Since(rs.StartTime.Time) < restoreQuiet
	}
	return !c.DeletionTimestamp.IsZero() || c.Hibernating()
}

const restoreQuiet = 15 * time.Minute

// Evaluate returns the alerts that fire for a cluster now: each watched
// condition False for at least after (from its lastTransitionTime), and a
// backup whose last attempt failed.
func Evaluate(c *lotsev1.Cluster, now time.Time, after time.Duration) []Alert {
	var out []Alert
	labels := func(name string) map[string]string {
		return map[string]string{"alertname": name, "namespace": c.Namespace, "cluster": c.Name, "severity": "critical"}
	}
	if !quiet(c) {
		for _, typ := range WatchedConditions {
			cond := meta.FindStatusCondition(c.Status.Conditions, typ)
			if cond == nil || cond.Status != metav1.ConditionFalse || now.Sub(cond.LastTransitionTime.Time) < after {
				continue
			}
			l := labels(AlertConditionFalse)
			l["condition"] = typ
			if typ == lotsev1.ConditionEveryNodeReady || typ == lotsev1.ConditionSystemComponentsHealthy {
				l["severity"] = "warning"
			}
			out = append(out, Alert{Labels: l, StartsAt: cond.LastTransitionTime.Time, Annotations: map[string]string{
				"summary":     fmt.Sprintf("cluster %s/%s: %s is False since %s", c.Namespace, c.Name, typ, cond.LastTransitionTime.UTC().Format(time.RFC3339)),
				"description": fmt.Sprintf("%s: %s", cond.Reason, cond.Message),
			}})
		}
	}
	if b := c.Status.Backup; b != nil && b.LastError != "" && b.LastFailureTime != nil &&
		(b.LastSuccessTime == nil || b.LastFailureTime.After(b.LastSuccessTime.Time)) {
		l := labels(AlertBackupFailed)
		l["severity"] = "warning"
		out = append(out, Alert{Labels: l, StartsAt: b.LastFailureTime.Time, Annotations: map[string]string{
			"summary":     fmt.Sprintf("cluster %s/%s: the last backup failed", c.Namespace, c.Name),
			"description": b.LastError,
		}})
	}
	return out
}

// Notifier delivers alerts that started or ended.
type Notifier interface {
	Notify(ctx context.Context, alerts []Alert) error
}

// Webhook posts Alertmanager's webhook payload (version 4) to receivers,
// as Alertmanager would: anything that takes Alertmanager's webhooks takes
// Lotse's.
type Webhook struct {
	URLs   []string
	Client *http.Client
	// ExternalURL is where the alerts come from (the manager).
	ExternalURL string
}

type webhookAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// WebhookPayload is Alertmanager's webhook message.
type WebhookPayload struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []webhookAlert    `json:"alerts"`
}

// Payload builds the message for one group of alerts (one cluster's).
func (w *Webhook) Payload(alerts []Alert) WebhookPayload {
	p := WebhookPayload{Version: "4", Receiver: "lotse", Status: "resolved", ExternalURL: w.ExternalURL,
		GroupLabels: map[string]string{}, CommonAnnotations: map[string]string{}}
	common := map[string]string{}
	for i, a := range alerts {
		status := "firing"
		if a.Resolved() {
			status = "resolved"
		} else {
			p.Status = "firing"
		}
		p.Alerts = append(p.Alerts, webhookAlert{Status: status, Labels: a.Labels, Annotations: a.Annotations,
			StartsAt: a.StartsAt, EndsAt: a.EndsAt, Fingerprint: a.Fingerprint()})
		if i == 0 {
			for k, v := range a.Labels {
				common[k] = v
			}
			continue
		}
		for k, v := range common {
			if a.Labels[k] != v {
				delete(common, k)
			}
		}
	}
	p.CommonLabels = common
	for _, k := range []string{"namespace", "cluster"} {
		if v, ok := common[k]; ok {
			p.GroupLabels[k] = v
		}
	}
	keys := make([]string, 0, len(p.GroupLabels))
	for k, v := range p.GroupLabels {
		keys = append(keys, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(keys)
	p.GroupKey = "{}:{" + strings.Join(keys, ", ") + "}"
	return p
}

// Notify posts the alerts to every receiver; it fails if any receiver did
// not take them (the caller tries again later).
func (w *Webhook) Notify(ctx context.Context, alerts []Alert) error {
	if len(alerts) == 0 || len(w.URLs) == 0 {
		return nil
	}
	body, err := json.Marshal(w.Payload(alerts))
	if err != nil {
		return err
	}
	client := w.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	var failed []string
	for _, url := range w.URLs {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", url, err))
			continue
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", url, err))
			continue
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			failed = append(failed, fmt.Sprintf("%s: %s", url, resp.Status))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("alert webhook: %s", strings.Join(failed, "; "))
	}
	return nil
}
