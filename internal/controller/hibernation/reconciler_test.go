package hibernation

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// TestSchedules: the first look only records the time; a start that
// passed hibernates, an end wakes; a wake by hand lasts until the next
// start; an invalid schedule changes nothing and says why.
func TestSchedules(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 12, 1, h, m, 0, 0, time.UTC) }
	nights := []lotsev1.HibernationSchedule{{Start: "0 20 * * *", End: "0 7 * * *"}}
	tests := []struct {
		name        string
		schedules   []lotsev1.HibernationSchedule
		enabled     *bool
		checked     string // the annotation before; "" for none
		now         time.Time
		wantEnabled *bool
		wantChecked bool // the annotation moved to now
		wantEvent   string
		wantRequeue time.Duration
	}{
		{"first look records the time", nights, nil, "", at(20, 30), nil, true, "", 10*time.Hour + 30*time.Minute + time.Second},
		{"start passed: hibernate", nights, nil, at(19, 59).Format(time.RFC3339), at(20, 0), ptr.To(true), true, "HibernationScheduled", 11*time.Hour + time.Second},
		{"nothing due", nights, ptr.To(true), at(20, 0).Format(time.RFC3339), at(23, 0), ptr.To(true), false, "", 8*time.Hour + time.Second},
		{"woken by hand at night stays awake", nights, ptr.To(false), at(20, 0).Format(time.RFC3339), at(23, 0), ptr.To(false), false, "", 8*time.Hour + time.Second},
		{"end passed: wake", nights, ptr.To(true), at(6, 59).Format(time.RFC3339), at(7, 0), ptr.To(false), true, "HibernationScheduled", 13*time.Hour + time.Second},
		{"already as the schedule says: only the time moves", nights, ptr.To(false), at(6, 59).Format(time.RFC3339), at(7, 0), ptr.To(false), true, "", 13*time.Hour + time.Second},
		{"invalid schedule", []lotsev1.HibernationSchedule{{Start: "0 25 * * *"}}, nil, at(6, 0).Format(time.RFC3339), at(7, 0), nil, false, "InvalidHibernationSchedule", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1"}}
			c.Spec.Hibernation = &lotsev1.HibernationSpec{Enabled: tt.enabled, Schedules: tt.schedules}
			if tt.checked != "" {
				c.Annotations = map[string]string{CheckedAnnotation: tt.checked + " " + schedulesSum(tt.schedules)}
			}
			scheme := runtime.NewScheme()
			_ = clientgoscheme.AddToScheme(scheme)
			_ = lotsev1.AddToScheme(scheme)
			cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(c).Build()
			rec := events.NewFakeRecorder(10)
			r := &Reconciler{Client: cl, Recorder: rec, Now: func() time.Time { return tt.now }}
			res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(c)})
			if err != nil {
				t.Fatal(err)
			}
			got := &lotsev1.Cluster{}
			if err := cl.Get(context.Background(), client.ObjectKeyFromObject(c), got); err != nil {
				t.Fatal(err)
			}
			if e := got.Spec.Hibernation.Enabled; (e == nil) != (tt.wantEnabled == nil) || (e != nil && *e != *tt.wantEnabled) {
				t.Errorf("enabled %v, want %v", ptr.Deref(e, false), ptr.Deref(tt.wantEnabled, false))
			}
			if moved := got.Annotations[CheckedAnnotation] == tt.now.Format(time.RFC3339)+" "+schedulesSum(tt.schedules); moved != tt.wantChecked {
				t.Errorf("checked annotation %q (moved %t, want %t)", got.Annotations[CheckedAnnotation], moved, tt.wantChecked)
			}
			var event string
			select {
			case e := <-rec.Events:
				event = e
			default:
			}
			if (tt.wantEvent == "") != (event == "") || (tt.wantEvent != "" && !strings.Contains(event, tt.wantEvent)) {
				t.Errorf("event %q, want %q", event, tt.wantEvent)
			}
			if res.RequeueAfter != tt.wantRequeue {
				t.Errorf("requeue after %s, want %s", res.RequeueAfter, tt.wantRequeue)
			}
		})
	}
}

// TestEditedSchedulesStartOver: a schedule added (or changed) after the
// last check does not act on times before the edit.
func TestEditedSchedulesStartOver(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 12, 1, h, m, 0, 0, time.UTC) }
	before := []lotsev1.HibernationSchedule{{Start: "0 22 * * *"}}
	after := []lotsev1.HibernationSchedule{{Start: "0 8 * * *"}} // 08:00 lies between the check and now
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1",
		Annotations: map[string]string{CheckedAnnotation: at(6, 0).Format(time.RFC3339) + " " + schedulesSum(before)}}}
	c.Spec.Hibernation = &lotsev1.HibernationSpec{Schedules: after}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = lotsev1.AddToScheme(scheme)
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(c).Build()
	r := &Reconciler{Client: cl, Recorder: events.NewFakeRecorder(10), Now: func() time.Time { return at(12, 0) }}
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(c)}); err != nil {
		t.Fatal(err)
	}
	got := &lotsev1.Cluster{}
	if err := cl.Get(context.Background(), client.ObjectKeyFromObject(c), got); err != nil {
		t.Fatal(err)
	}
	if got.Hibernating() {
		t.Error("the edited schedule hibernated the cluster for a time before the edit")
	}
	if want := at(12, 0).Format(time.RFC3339) + " " + schedulesSum(after); got.Annotations[CheckedAnnotation] != want {
		t.Errorf("checked %q, want %q", got.Annotations[CheckedAnnotation], want)
	}
}
