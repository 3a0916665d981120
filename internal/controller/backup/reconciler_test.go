package backup

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/backup"
	"github.com/lotse/lotse/internal/controller/controllertest"
	"github.com/lotse/lotse/internal/releases"
)

// TestReconcile: when a snapshot is taken (schedule due, on demand), when
// not (not due, asleep, not healthy), what a bad schedule says, and that
// retention prunes.
func TestReconcile(t *testing.T) {
	now := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	tests := []struct {
		name     string
		spec     *lotsev1.BackupSpec
		status   *lotsev1.BackupStatus
		onDemand bool
		change   func(*lotsev1.Cluster)
		existing int // snapshots already stored (an hour apart, before now)

		wantSnapshot bool
		wantKept     int
		wantNext     *metav1.Time
		wantError    string
		wantEvent    string
		wantRequeue  time.Duration
	}{
		{name: "first look at a schedule only plans", spec: &lotsev1.BackupSpec{Schedule: "0 */6 * * *"},
			wantNext: at(6 * time.Hour), wantRequeue: 6 * time.Hour},
		{name: "due", spec: &lotsev1.BackupSpec{Schedule: "0 */6 * * *"}, status: &lotsev1.BackupStatus{Schedule: "0 */6 * * * UTC", NextScheduled: at(0)},
			wantSnapshot: true, wantKept: 1, wantNext: at(6 * time.Hour), wantEvent: "BackupSucceeded", wantRequeue: 6 * time.Hour},
		{name: "not due", spec: &lotsev1.BackupSpec{Schedule: "0 */6 * * *"}, status: &lotsev1.BackupStatus{Schedule: "0 */6 * * * UTC", NextScheduled: at(time.Hour)},
			wantNext: at(time.Hour), wantRequeue: time.Hour},
		{name: "an edited schedule plans again", spec: &lotsev1.BackupSpec{Schedule: "30 * * * *"}, status: &lotsev1.BackupStatus{Schedule: "0 */6 * * * UTC", NextScheduled: at(-time.Hour)},
			wantNext: at(30 * time.Minute), wantRequeue: 30 * time.Minute},
		{name: "in another zone", spec: &lotsev1.BackupSpec{Schedule: "0 20 * * *", Location: "Europe/Zurich"},
			wantNext: at(time.Hour), wantRequeue: time.Hour},
		{name: "on demand without a schedule", onDemand: true,
			wantSnapshot: true, wantKept: 1, wantEvent: "BackupSucceeded"},
		{name: "retention prunes the oldest", spec: &lotsev1.BackupSpec{Retention: 2}, onDemand: true, existing: 3,
			wantSnapshot: true, wantKept: 2, wantEvent: "BackupSucceeded"},
		{name: "a bad schedule says why", spec: &lotsev1.BackupSpec{Schedule: "0 25 * * *"},
			wantError: "spec.backup.schedule: \"0 25 * * *\" is not a cron schedule", wantEvent: "InvalidBackupSchedule"},
		{name: "a bad time zone says why", spec: &lotsev1.BackupSpec{Schedule: "0 1 * * *", Location: "Mars/Olympus"},
			wantError: "spec.backup.location", wantEvent: "InvalidBackupSchedule"},
		{name: "hibernated: the scheduled slot is skipped", spec: &lotsev1.BackupSpec{Schedule: "0 */6 * * *"},
			status:   &lotsev1.BackupStatus{Schedule: "0 */6 * * * UTC", NextScheduled: at(0)},
			change:   func(c *lotsev1.Cluster) { c.Spec.Hibernation = &lotsev1.HibernationSpec{Enabled: ptr.To(true)} },
			wantNext: at(6 * time.Hour), wantRequeue: 6 * time.Hour},
		{name: "on demand waits for a healthy control plane", onDemand: true,
			change:      func(c *lotsev1.Cluster) { c.Status.Conditions = nil },
			wantRequeue: 15 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1", UID: "u1"}}
			c.Spec.Backup = tt.spec
			c.Status.Backup = tt.status
			c.Status.KubernetesVersion = releases.Default().Version
			meta.SetStatusCondition(&c.Status.Conditions, metav1.Condition{Type: lotsev1.ConditionControlPlaneHealthy, Status: metav1.ConditionTrue, Reason: "Healthy"})
			if tt.onDemand {
				c.Annotations = map[string]string{lotsev1.OperationAnnotation: lotsev1.OperationBackup}
			}
			if tt.change != nil {
				tt.change(c)
			}
			scheme := runtime.NewScheme()
			_ = clientgoscheme.AddToScheme(scheme)
			_ = lotsev1.AddToScheme(scheme)
			cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(c).WithStatusSubresource(c).Build()
			dir := t.TempDir()
			store := backup.DirStore{Dir: dir + "/default/c1"}
			for i := range tt.existing {
				name := backup.FileName(backup.SnapshotName(now.Add(-time.Duration(i+1) * time.Hour)))
				if err := store.Put(ctx, name, strings.NewReader("old"), -1); err != nil {
					t.Fatal(err)
				}
			}
			be := &controllertest.FakeBackend{}
			rec := events.NewFakeRecorder(10)
			r := &Reconciler{Client: cl, Backend: be, Releases: controllertest.InstalledStore(t),
				Destinations: &backup.Destinations{Client: cl, Reader: cl, DefaultDir: dir, WorkDir: t.TempDir()},
				Recorder:     rec, Now: func() time.Time { return now }}
			res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(c)})
			if err != nil {
				t.Fatal(err)
			}
			got := &lotsev1.Cluster{}
			if err := cl.Get(ctx, client.ObjectKeyFromObject(c), got); err != nil {
				t.Fatal(err)
			}
			if (be.Snapshots() == 1) != tt.wantSnapshot {
				t.Errorf("snapshots taken: %d, want one: %v", be.Snapshots(), tt.wantSnapshot)
			}
			if res.RequeueAfter != tt.wantRequeue {
				t.Errorf("requeue after %s, want %s", res.RequeueAfter, tt.wantRequeue)
			}
			if _, ok := got.Annotations[lotsev1.OperationAnnotation]; ok && tt.wantSnapshot {
				t.Error("the on-demand annotation stayed after the backup")
			}
			b := got.Status.Backup
			if b == nil {
				b = &lotsev1.BackupStatus{}
			}
			if !tt.wantNext.Equal(b.NextScheduled) {
				t.Errorf("nextScheduled %v, want %v", b.NextScheduled, tt.wantNext)
			}
			if !strings.Contains(b.LastError, tt.wantError) || (tt.wantError == "") != (b.LastError == "") {
				t.Errorf("lastError %q, want %q", b.LastError, tt.wantError)
			}
			if tt.wantSnapshot {
				want := backup.SnapshotName(now)
				if b.LastSnapshot != want || len(b.Snapshots) != tt.wantKept || b.Snapshots[len(b.Snapshots)-1].Name != want {
					t.Errorf("status.backup: %+v, want %d kept, the newest %s", b, tt.wantKept, want)
				}
				// The stored file opens with the manager's key and holds
				// the backend's snapshot and the cluster's identity.
				key, err := r.Destinations.Key(ctx)
				if err != nil {
					t.Fatal(err)
				}
				f, err := store.Get(ctx, backup.FileName(want))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				contents, err := backup.Read(f, key, t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				if contents.Manifest.UID != "u1" || contents.Manifest.Name != "c1" || !bytes.Contains(contents.Manifest.Spec, []byte("{")) {
					t.Errorf("manifest %+v", contents.Manifest)
				}
			}
			var events []string
			for len(rec.Events) > 0 {
				events = append(events, <-rec.Events)
			}
			if tt.wantEvent != "" && (len(events) == 0 || !strings.Contains(events[0], tt.wantEvent)) {
				t.Errorf("events %v, want %s", events, tt.wantEvent)
			}
			if tt.wantEvent == "" && len(events) > 0 {
				t.Errorf("unexpected events %v", events)
			}
		})
	}
}
