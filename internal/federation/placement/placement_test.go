package placement

import (
	"maps"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
)

var fleet = []Member{
	{Name: "c", Region: "eu", Zone: "eu-1", Provider: "local", Labels: map[string]string{"env": "prod"}, Available: 10},
	{Name: "a", Region: "eu", Zone: "eu-2", Provider: "local", Labels: map[string]string{"env": "prod"}, Available: 2},
	{Name: "b", Region: "us", Provider: "other", Labels: map[string]string{"env": "dev"}, Available: 5},
}

func selected(ms []Member) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Name)
	}
	return strings.Join(s, ",")
}

func TestSelect(t *testing.T) {
	for _, tc := range []struct {
		name string
		aff  *policyv1.ClusterAffinity
		want string
	}{
		{"nil selects all, sorted", nil, "a,b,c"},
		{"names", &policyv1.ClusterAffinity{ClusterNames: []string{"c", "b", "zz"}}, "b,c"},
		{"exclude wins", &policyv1.ClusterAffinity{ClusterNames: []string{"a", "b"}, Exclude: []string{"a"}}, "b"},
		{"labels", &policyv1.ClusterAffinity{LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}, "a,c"},
		{"region in", &policyv1.ClusterAffinity{FieldSelector: &policyv1.FieldSelector{MatchExpressions: []policyv1.FieldSelectorRequirement{
			{Key: "region", Operator: "In", Values: []string{"us"}}}}}, "b"},
		{"zone exists and provider not in", &policyv1.ClusterAffinity{FieldSelector: &policyv1.FieldSelector{MatchExpressions: []policyv1.FieldSelectorRequirement{
			{Key: "zone", Operator: "Exists"}, {Key: "provider", Operator: "NotIn", Values: []string{"other"}}}}}, "a,c"},
		{"zone does not exist", &policyv1.ClusterAffinity{FieldSelector: &policyv1.FieldSelector{MatchExpressions: []policyv1.FieldSelectorRequirement{
			{Key: "zone", Operator: "DoesNotExist"}}}}, "b"},
		{"every part must hold", &policyv1.ClusterAffinity{ClusterNames: []string{"a", "b"},
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "dev"}}}, "b"},
		{"nothing", &policyv1.ClusterAffinity{ClusterNames: []string{"zz"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Select(fleet, tc.aff)
			if err != nil {
				t.Fatal(err)
			}
			if selected(got) != tc.want {
				t.Errorf("got %q, want %q", selected(got), tc.want)
			}
		})
	}
	if _, err := Select(fleet, &policyv1.ClusterAffinity{FieldSelector: &policyv1.FieldSelector{MatchExpressions: []policyv1.FieldSelectorRequirement{
		{Key: "colour", Operator: "In"}}}}); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Errorf("unknown field key: %v", err)
	}
}

func weighted(list ...policyv1.StaticClusterWeight) *policyv1.ReplicaSchedulingStrategy {
	return &policyv1.ReplicaSchedulingStrategy{ReplicaSchedulingType: policyv1.ReplicaSchedulingDivided,
		ReplicaDivisionPreference: policyv1.DivisionWeighted,
		WeightPreference:          &policyv1.ClusterPreferences{StaticWeightList: list}}
}

func weight(names []string, w int64) policyv1.StaticClusterWeight {
	return policyv1.StaticClusterWeight{TargetCluster: policyv1.ClusterAffinity{ClusterNames: names}, Weight: w}
}

func TestDivide(t *testing.T) {
	all, _ := Select(fleet, nil)
	for _, tc := range []struct {
		name     string
		total    int32
		members  []Member
		strategy *policyv1.ReplicaSchedulingStrategy
		want     map[string]int32
		wantErr  string
	}{
		{"no strategy duplicates", 3, all, nil, map[string]int32{"a": 3, "b": 3, "c": 3}, ""},
		{"duplicated", 2, all[:2], &policyv1.ReplicaSchedulingStrategy{ReplicaSchedulingType: policyv1.ReplicaSchedulingDuplicated},
			map[string]int32{"a": 2, "b": 2}, ""},
		{"2:1 static", 6, all[:2], weighted(weight([]string{"a"}, 2), weight([]string{"b"}, 1)), map[string]int32{"a": 4, "b": 2}, ""},
		{"remainders to the largest", 7, all, weighted(weight([]string{"a"}, 1), weight([]string{"b"}, 1), weight([]string{"c"}, 1)),
			map[string]int32{"a": 3, "b": 2, "c": 2}, ""},
		{"unmatched members get nothing", 5, all, weighted(weight([]string{"c"}, 3)), map[string]int32{"c": 5}, ""},
		{"equal weights by default", 4, all[:2], &policyv1.ReplicaSchedulingStrategy{ReplicaSchedulingType: policyv1.ReplicaSchedulingDivided},
			map[string]int32{"a": 2, "b": 2}, ""},
		{"dynamic by available", 17, all, &policyv1.ReplicaSchedulingStrategy{ReplicaSchedulingType: policyv1.ReplicaSchedulingDivided,
			WeightPreference: &policyv1.ClusterPreferences{DynamicWeight: policyv1.DynamicWeightAvailableReplicas}},
			map[string]int32{"a": 2, "b": 5, "c": 10}, ""},
		{"dynamic without capacity figures: equal", 4, []Member{{Name: "x", Available: -1}, {Name: "y", Available: 3}},
			&policyv1.ReplicaSchedulingStrategy{ReplicaSchedulingType: policyv1.ReplicaSchedulingDivided,
				WeightPreference: &policyv1.ClusterPreferences{DynamicWeight: policyv1.DynamicWeightAvailableReplicas}},
			map[string]int32{"x": 2, "y": 2}, ""},
		{"huge weights do not overflow", 3, all[:2], weighted(weight([]string{"a"}, 1<<62), weight([]string{"b"}, 1<<62)),
			map[string]int32{"a": 2, "b": 1}, ""},
		{"aggregated fills the roomiest first", 12, all, &policyv1.ReplicaSchedulingStrategy{ReplicaSchedulingType: policyv1.ReplicaSchedulingDivided,
			ReplicaDivisionPreference: policyv1.DivisionAggregated}, map[string]int32{"c": 10, "b": 2}, ""},
		{"zero replicas", 0, all, weighted(weight([]string{"a"}, 1)), map[string]int32{}, ""},
		{"weights sum to 0", 3, all, weighted(weight([]string{"a"}, 0)), nil, "sum to 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Divide(tc.total, tc.members, tc.strategy)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			var sum int32
			for _, n := range got {
				sum += n
			}
			if (tc.strategy == nil || tc.strategy.ReplicaSchedulingType == policyv1.ReplicaSchedulingDivided) && tc.strategy != nil && sum != tc.total {
				t.Errorf("divided replicas sum to %d, want %d", sum, tc.total)
			}
		})
	}
}
