package patch

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

func TestStatus(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = lotsev1.AddToScheme(scheme)
	ctx := context.Background()
	tests := []struct {
		name string
		// between runs after the reconcile read the object and before it
		// writes the status.
		between func(t *testing.T, c client.Client)
	}{
		{"nothing in between", func(*testing.T, client.Client) {}},
		{"the spec changed in between (stale resourceVersion)", func(t *testing.T, c client.Client) {
			cur := &lotsev1.Cluster{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "c1"}, cur); err != nil {
				t.Fatal(err)
			}
			cur.Spec.ControlPlane.HighAvailability = true
			if err := c.Update(ctx, cur); err != nil {
				t.Fatal(err)
			}
		}},
		{"the object is gone", func(t *testing.T, c client.Client) {
			if err := c.Delete(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1"}}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1"}}
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(obj).WithStatusSubresource(obj).Build()
			read := &lotsev1.Cluster{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), read); err != nil {
				t.Fatal(err)
			}
			before := read.DeepCopy()
			tt.between(t, c)
			read.Status.Phase = lotsev1.PhaseRunning
			read.Status.ObservedGeneration = 7
			if err := Status(ctx, c, read, before); err != nil {
				t.Fatalf("Status: %v", err)
			}
			got := &lotsev1.Cluster{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
				return // gone: nothing to check
			}
			if got.Status.Phase != lotsev1.PhaseRunning || got.Status.ObservedGeneration != 7 {
				t.Errorf("status after the patch: %+v", got.Status)
			}
		})
	}
}

// TestRemoveAnnotationIf: the annotation goes only while it has the value
// the caller saw; a value written in between stays.
func TestRemoveAnnotationIf(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = lotsev1.AddToScheme(scheme)
	ctx := context.Background()
	for _, tt := range []struct {
		name, onServer string
		wantLeft       string
	}{
		{"still the same value: removed", "backup", ""},
		{"changed in between: kept", "maintain", "maintain"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1",
				Annotations: map[string]string{lotsev1.OperationAnnotation: tt.onServer, "other": "x"}}}
			cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(c).Build()
			seen := c.DeepCopy()
			seen.Annotations[lotsev1.OperationAnnotation] = "backup" // what the caller read
			if err := RemoveAnnotationIf(ctx, cl, seen, lotsev1.OperationAnnotation, "backup"); err != nil {
				t.Fatal(err)
			}
			got := &lotsev1.Cluster{}
			if err := cl.Get(ctx, client.ObjectKeyFromObject(c), got); err != nil {
				t.Fatal(err)
			}
			if got.Annotations[lotsev1.OperationAnnotation] != tt.wantLeft || got.Annotations["other"] != "x" {
				t.Errorf("annotations %v, want %s=%q and other kept", got.Annotations, lotsev1.OperationAnnotation, tt.wantLeft)
			}
		})
	}
}
