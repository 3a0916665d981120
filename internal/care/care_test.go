package care

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controller/controllertest"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/releases"
)

var t0 = time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)

func cluster(phase lotsev1.ClusterPhase, conds ...metav1.Condition) *lotsev1.Cluster {
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c1"}}
	c.Status.Phase = phase
	for _, cond := range conds {
		meta.SetStatusCondition(&c.Status.Conditions, cond)
		// SetStatusCondition stamps now when the time is zero; keep ours.
		meta.FindStatusCondition(c.Status.Conditions, cond.Type).LastTransitionTime = cond.LastTransitionTime
	}
	return c
}

func cond(typ string, ok bool, since time.Time) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: "R", Message: "m", LastTransitionTime: metav1.Time{Time: since}}
}

func TestEvaluate(t *testing.T) {
	now := t0.Add(10 * time.Minute)
	failedBackup := cluster(lotsev1.PhaseRunning)
	failedBackup.Status.Backup = &lotsev1.BackupStatus{LastError: "bucket gone", LastFailureTime: &metav1.Time{Time: t0},
		LastSuccessTime: &metav1.Time{Time: t0.Add(-time.Hour)}}
	recovered := cluster(lotsev1.PhaseRunning)
	recovered.Status.Backup = &lotsev1.BackupStatus{LastError: "", LastFailureTime: &metav1.Time{Time: t0},
		LastSuccessTime: &metav1.Time{Time: t0.Add(time.Minute)}}
	tests := []struct {
		name string
		c    *lotsev1.Cluster
		want []string // alertname/condition
	}{
		{"healthy", cluster(lotsev1.PhaseRunning, cond(lotsev1.ConditionAPIServerAvailable, true, t0)), nil},
		{"False long enough", cluster(lotsev1.PhaseUnhealthy, cond(lotsev1.ConditionAPIServerAvailable, false, t0)),
			[]string{AlertConditionFalse + "/APIServerAvailable"}},
		{"False too briefly", cluster(lotsev1.PhaseUnhealthy, cond(lotsev1.ConditionAPIServerAvailable, false, now.Add(-time.Minute))), nil},
		{"two conditions", cluster(lotsev1.PhaseUnhealthy, cond(lotsev1.ConditionControlPlaneHealthy, false, t0), cond(lotsev1.ConditionEveryNodeReady, false, t0)),
			[]string{AlertConditionFalse + "/ControlPlaneHealthy", AlertConditionFalse + "/EveryNodeReady"}},
		{"Ready is not watched (it is the sum)", cluster(lotsev1.PhaseUnhealthy, cond(lotsev1.ConditionReady, false, t0)), nil},
		{"hibernated clusters are quiet", cluster(lotsev1.PhaseHibernated, cond(lotsev1.ConditionAPIServerAvailable, false, t0)), nil},
		{"creating clusters are quiet", cluster(lotsev1.PhaseCreating, cond(lotsev1.ConditionAPIServerAvailable, false, t0)), nil},
		{"restoring clusters are quiet", cluster(lotsev1.PhaseRestoring, cond(lotsev1.ConditionAPIServerAvailable, false, t0)), nil},
		{"a failed backup", failedBackup, []string{AlertBackupFailed + "/"}},
		{"a backup that succeeded after failing", recovered, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, a := range Evaluate(tt.c, now, 5*time.Minute) {
				got = append(got, a.Labels["alertname"]+"/"+a.Labels["condition"])
				if a.Labels["cluster"] != "c1" || a.Labels["namespace"] != "ns" || a.Annotations["summary"] == "" {
					t.Errorf("alert %+v", a)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("alerts %v, want %v", got, tt.want)
			}
		})
	}
}

// receiver is an Alertmanager webhook receiver that records what it gets.
type receiver struct {
	mu       sync.Mutex
	payloads []WebhookPayload
	fail     bool
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	var p WebhookPayload
	if err := json.NewDecoder(req.Body).Decode(&p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.payloads = append(r.payloads, p)
}

func (r *receiver) take() []WebhookPayload {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.payloads
	r.payloads = nil
	return p
}

// TestAlertLifecycle: an alert is sent once when it starts, again after
// the repeat interval, as resolved when it ends; a failed delivery is
// sent again at the next look.
func TestAlertLifecycle(t *testing.T) {
	rcv := &receiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	c := &Controller{Notifier: &Webhook{URLs: []string{srv.URL}}, RepeatInterval: time.Hour}
	ctx := context.Background()
	sick := cluster(lotsev1.PhaseUnhealthy, cond(lotsev1.ConditionAPIServerAvailable, false, t0))
	look := func(at time.Time, cl *lotsev1.Cluster) []WebhookPayload {
		alerts := Evaluate(cl, at, time.Minute)
		by := map[string]*lotsev1.Cluster{}
		for _, a := range alerts {
			by[a.Fingerprint()] = cl
		}
		c.alerts(ctx, alerts, by, at)
		return rcv.take()
	}
	expect := func(step string, got []WebhookPayload, status string) {
		t.Helper()
		if status == "" {
			if len(got) != 0 {
				t.Errorf("%s: sent %+v, want nothing", step, got)
			}
			return
		}
		if len(got) != 1 || got[0].Status != status || got[0].Version != "4" || len(got[0].Alerts) != 1 ||
			got[0].Alerts[0].Labels["condition"] != "APIServerAvailable" || got[0].GroupLabels["cluster"] != "c1" {
			t.Fatalf("%s: sent %+v, want one %s alert", step, got, status)
		}
	}
	expect("before the threshold", look(t0.Add(30*time.Second), sick), "")
	expect("past the threshold", look(t0.Add(2*time.Minute), sick), "firing")
	expect("still firing", look(t0.Add(3*time.Minute), sick), "")
	expect("repeat interval", look(t0.Add(63*time.Minute), sick), "firing")
	rcv.fail = true
	healthy := cluster(lotsev1.PhaseRunning, cond(lotsev1.ConditionAPIServerAvailable, true, t0.Add(64*time.Minute)))
	expect("resolved, receiver down", look(t0.Add(64*time.Minute), healthy), "")
	rcv.fail = false
	got := look(t0.Add(65*time.Minute), healthy)
	expect("resolved, delivered at the next look", got, "resolved")
	if e := got[0].Alerts[0].EndsAt; !e.Equal(t0.Add(64 * time.Minute)) {
		t.Errorf("endsAt %v, want when it was seen healthy", e)
	}
	expect("nothing left", look(t0.Add(66*time.Minute), healthy), "")
}

func TestWebhookErrors(t *testing.T) {
	rcv := &receiver{fail: true}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	w := &Webhook{URLs: []string{srv.URL}}
	err := w.Notify(context.Background(), []Alert{{Labels: map[string]string{"alertname": "x"}}})
	if err == nil || !strings.Contains(err.Error(), srv.URL) || !strings.Contains(err.Error(), "503") {
		t.Errorf("error %v", err)
	}
	for _, bad := range []string{"", "ftp://x", "localhost:9093"} {
		if CheckWebhookURL(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// sickBackend reports given component health and records restarts.
type sickBackend struct {
	controllertest.FakeBackend
	mu        sync.Mutex
	health    []controlplane.ComponentHealth
	restarted []string
}

func (b *sickBackend) Status(context.Context, controlplane.Spec) controlplane.Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return controlplane.Status{Components: b.health}
}

func (b *sickBackend) RestartComponent(_ context.Context, _ controlplane.Spec, component string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.restarted = append(b.restarted, component)
	return errors.New("recorded only")
}

func (b *sickBackend) restarts() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.restarted...)
}

// TestRepair: a component unhealthy past the threshold is restarted, once
// at a time, unless what it depends on is unhealthy too or the cluster is
// being upgraded.
func TestRepair(t *testing.T) {
	h := func(name string, ok bool) controlplane.ComponentHealth {
		return controlplane.ComponentHealth{Name: name, Healthy: ok, Message: "timeout"}
	}
	tests := []struct {
		name    string
		health  []controlplane.ComponentHealth
		upgrade bool
		want    string
	}{
		{"a hung API server", []controlplane.ComponentHealth{h("etcd-0", true), h("kube-apiserver-0", false)}, false, "kube-apiserver"},
		{"an API server without etcd waits", []controlplane.ComponentHealth{h("etcd-0", false), h("kube-apiserver-0", false)}, false, "etcd"},
		{"a scheduler without an API server waits", []controlplane.ComponentHealth{h("kube-apiserver-0", false), h("kube-scheduler-0", false), h("etcd-0", true)}, false, "kube-apiserver"},
		{"the shared datastore is no cluster's to restart", []controlplane.ComponentHealth{h("etcd-shared-0", false)}, false, ""},
		{"an API server without the shared datastore waits", []controlplane.ComponentHealth{h("etcd-shared-0", false), h("kube-apiserver-0", false)}, false, ""},
		{"the load balancer is never restarted", []controlplane.ComponentHealth{h("loadbalancer-0", false)}, false, ""},
		{"not during an upgrade", []controlplane.ComponentHealth{h("etcd-0", true), h("kube-apiserver-0", false)}, true, ""},
		{"healthy", []controlplane.ComponentHealth{h("etcd-0", true), h("kube-apiserver-0", true)}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &sickBackend{health: tt.health}
			c := &Controller{Backend: b, RestartAfter: time.Minute}
			cl := cluster(lotsev1.PhaseUnhealthy)
			if tt.upgrade {
				cl.Status.Upgrade = &lotsev1.UpgradeStatus{}
			}
			spec := controlplane.Spec{Key: "cluster/ns/c1", Binaries: releases.Binaries{Release: releases.Default()}}
			for _, at := range []time.Duration{0, 30 * time.Second, 61 * time.Second, 62 * time.Second} {
				c.repair(context.Background(), cl, spec, b.Status(context.Background(), spec), t0.Add(at))
			}
			var got []string
			for i := 0; i < 50 && len(got) == 0 && tt.want != ""; i++ {
				time.Sleep(10 * time.Millisecond)
				got = b.restarts()
			}
			time.Sleep(20 * time.Millisecond)
			got = b.restarts()
			if strings.Join(got, ",") != tt.want {
				t.Errorf("restarted %v, want %q", got, tt.want)
			}
		})
	}
}

// An API server that was unhealthy because etcd was down gets its whole
// grace once etcd is back: the moment after a long etcd outage is not
// the time to restart it (it is reconnecting).
func TestRepairCountsOnlyTimeWithDependenciesHealthy(t *testing.T) {
	h := func(name string, ok bool) controlplane.ComponentHealth {
		return controlplane.ComponentHealth{Name: name, Healthy: ok, Message: "timeout"}
	}
	b := &sickBackend{health: []controlplane.ComponentHealth{h("etcd-0", false), h("kube-apiserver-0", false)}}
	c := &Controller{Backend: b, RestartAfter: time.Minute}
	cl := cluster(lotsev1.PhaseUnhealthy)
	spec := controlplane.Spec{Key: "cluster/ns/c1", Binaries: releases.Binaries{Release: releases.Default()}}
	look := func(at time.Duration) {
		c.repair(context.Background(), cl, spec, b.Status(context.Background(), spec), t0.Add(at))
	}
	// etcd down for two minutes: etcd itself is restarted, nothing else.
	b.health = []controlplane.ComponentHealth{h("etcd-0", false), h("kube-apiserver-0", false)}
	for _, at := range []time.Duration{0, 30 * time.Second, 61 * time.Second, 120 * time.Second} {
		look(at)
	}
	time.Sleep(50 * time.Millisecond)
	if got := strings.Join(b.restarts(), ","); got != "etcd" {
		t.Fatalf("while etcd was down: restarted %q, want etcd", got)
	}
	// etcd is back; the API server still reconnects.
	b.mu.Lock()
	b.health = []controlplane.ComponentHealth{h("etcd-0", true), h("kube-apiserver-0", false)}
	b.mu.Unlock()
	look(121 * time.Second)
	look(150 * time.Second)
	time.Sleep(50 * time.Millisecond)
	if got := strings.Join(b.restarts(), ","); got != "etcd" {
		t.Errorf("right after etcd came back: restarted %q, want nothing more", got)
	}
	// Still unhealthy a minute after etcd came back: now it is hung.
	look(182 * time.Second)
	for i := 0; i < 50 && len(b.restarts()) < 2; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if got := strings.Join(b.restarts(), ","); got != "etcd,kube-apiserver" {
		t.Errorf("a minute after etcd came back: restarted %q, want the API server too", got)
	}
}
