package cli

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/backup"
)

func TestRestoreOutcome(t *testing.T) {
	requested := time.Date(2026, 12, 5, 10, 0, 0, 500e6, time.UTC).Add(-time.Second)
	ref := backup.Ref{Namespace: "default", Cluster: "keeper", Snapshot: "20261205T095959Z"}
	at := func(d time.Duration) *metav1.Time {
		// As the API has it: seconds only.
		return &metav1.Time{Time: requested.Add(time.Second).Add(d).Truncate(time.Second)}
	}
	// cluster is keeper with or without the restore annotation, having
	// run (a version in status) or not, and the restore status given.
	cluster := func(annotated, ran bool, rs *lotsev1.RestoreStatus) *lotsev1.Cluster {
		c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "keeper"}}
		if annotated {
			c.Annotations = map[string]string{lotsev1.RestoreAnnotation: ref.Snapshot}
		}
		if ran {
			c.Status.KubernetesVersion = "1.37.2"
		}
		c.Status.Restore = rs
		return c
	}
	tests := []struct {
		name      string
		cluster   *lotsev1.Cluster
		wantDone  bool
		wantError string
	}{
		{"nothing yet", cluster(true, true, nil), false, ""},
		{"an earlier request's refusal in the same second",
			cluster(true, true, &lotsev1.RestoreStatus{From: "default/keeper/20200101T000000Z", Step: lotsev1.RestoreStepFailed, StartTime: at(0)}), false, ""},
		{"an earlier refusal of the same snapshot, not yet taken up",
			cluster(true, true, &lotsev1.RestoreStatus{From: ref.String(), Step: lotsev1.RestoreStepFailed, StartTime: at(0), Message: "refused: old"}), false, ""},
		{"an outcome from before the request",
			cluster(false, true, &lotsev1.RestoreStatus{From: ref.String(), Step: lotsev1.RestoreStepSucceeded, StartTime: at(-time.Minute)}), false, ""},
		{"refused, annotation taken away",
			cluster(false, true, &lotsev1.RestoreStatus{From: ref.String(), Step: lotsev1.RestoreStepFailed, StartTime: at(0), Message: "refused: snapshot 1: corrupt or truncated"}), true, "corrupt or truncated"},
		{"restoring", cluster(true, true, &lotsev1.RestoreStatus{From: ref.String(), Step: lotsev1.RestoreStepRestoring, StartTime: at(0)}), false, ""},
		{"starting, annotation taken away", cluster(false, true, &lotsev1.RestoreStatus{From: ref.String(), Step: lotsev1.RestoreStepStarting, StartTime: at(0)}), false, ""},
		{"succeeded", cluster(false, true, &lotsev1.RestoreStatus{From: ref.String(), Step: lotsev1.RestoreStepSucceeded, StartTime: at(0)}), true, ""},
		{"a cluster that has not run keeps its annotation when refused",
			cluster(true, false, &lotsev1.RestoreStatus{From: ref.String(), Step: lotsev1.RestoreStepFailed, StartTime: at(0), Message: "refused: there is no snapshot"}), true, "there is no snapshot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done, err := restoreOutcome(tt.cluster, ref, requested)
			if done != tt.wantDone {
				t.Errorf("done = %t, want %t", done, tt.wantDone)
			}
			switch {
			case tt.wantError == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tt.wantError != "" && (err == nil || !strings.Contains(err.Error(), tt.wantError)):
				t.Errorf("error %v, want one saying %q", err, tt.wantError)
			}
		})
	}
}
