package propagation

import (
	"regexp"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
)

// Work names are valid object names, readable, and differ whenever the
// kind, namespace or name differ.
func TestWorkName(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	seen := map[string]string{}
	for _, in := range [][3]string{
		{"Deployment", "shop", "web"},
		{"Service", "shop", "web"},
		{"Deployment", "other", "web"},
		{"Widget.example.com", "shop", "web"},
		{"Namespace", "", "shop"},
		{"ConfigMap", "shop", strings.Repeat("a", 253)},
	} {
		name := WorkName(in[0], in[1], in[2])
		if len(name) > 253 || !valid.MatchString(name) {
			t.Errorf("%v: %q is not an object name", in, name)
		}
		if !strings.HasPrefix(name, strings.ToLower(strings.SplitN(in[0], ".", 2)[0])+"-") {
			t.Errorf("%v: %q does not start with its kind", in, name)
		}
		if prev, ok := seen[name]; ok {
			t.Errorf("%v and %s share the name %q", in, prev, name)
		}
		seen[name] = in[0] + "/" + in[1] + "/" + in[2]
	}
}

// What a pull-mode member's agent reported is the copy's generation and
// status; a refusal for the current Work generation is the error; a
// report about an older generation tells nothing yet.
func TestReported(t *testing.T) {
	copyOf := template("Deployment", "shop", "web", nil, map[string]any{"spec": map[string]any{"replicas": int64(2)}})
	work := func(gen, observed int64, status metav1.ConditionStatus, manifest string) *workv1.Work {
		w := &workv1.Work{ObjectMeta: metav1.ObjectMeta{Generation: gen}}
		w.Status.Conditions = []metav1.Condition{{Type: workv1.ConditionApplied, Status: status, ObservedGeneration: observed, Message: "refused: conflict"}}
		if manifest != "" {
			w.Status.ManifestStatuses = []workv1.ManifestStatus{{Generation: 3, Status: &runtime.RawExtension{Raw: []byte(manifest)}}}
		}
		return w
	}
	for _, tc := range []struct {
		name      string
		w         *workv1.Work
		wantErr   bool
		wantReady int64
		wantGen   int64
	}{
		{"applied with status", work(2, 2, metav1.ConditionTrue, `{"readyReplicas":2,"observedGeneration":3}`), false, 2, 3},
		{"refused", work(2, 2, metav1.ConditionFalse, ""), true, 0, 0},
		{"a refusal of an older generation", work(3, 2, metav1.ConditionFalse, ""), false, 0, 0},
		{"a status of an older generation", work(3, 2, metav1.ConditionTrue, `{"readyReplicas":2}`), false, 0, 0},
		{"nothing reported", &workv1.Work{ObjectMeta: metav1.ObjectMeta{Generation: 1}}, false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := reported(tc.w, copyOf)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v", err)
			}
			if err != nil {
				return
			}
			ready, _, _ := unstructured.NestedInt64(got.Object, "status", "readyReplicas")
			if ready != tc.wantReady || got.GetGeneration() != tc.wantGen {
				t.Errorf("ready %d, generation %d; want %d, %d", ready, got.GetGeneration(), tc.wantReady, tc.wantGen)
			}
		})
	}
	if _, ok := copyOf.Object["status"]; ok {
		t.Error("reported changed the rendered copy")
	}
}
