package seed

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

func seedFor(name, region string, ready bool, capacity int32, labels map[string]string) lotsev1.Seed {
	s := lotsev1.Seed{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	s.Spec.Region = region
	s.Spec.Capacity.ControlPlanes = &capacity
	status := metav1.ConditionFalse
	if ready {
		status = metav1.ConditionTrue
	}
	s.Status.Conditions = []metav1.Condition{{Type: lotsev1.ConditionSeedReady, Status: status, Message: "probe said so"}}
	return s
}

func TestSchedule(t *testing.T) {
	gold := map[string]string{"tier": "gold"}
	deleted := seedFor("d", "local", true, 5, nil)
	deleted.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	tests := []struct {
		name     string
		selector *metav1.LabelSelector
		region   string
		seeds    []lotsev1.Seed
		hosted   map[string]int
		want     string
		wantErr  string
	}{
		{name: "least loaded", selector: &metav1.LabelSelector{}, region: "local",
			seeds: []lotsev1.Seed{seedFor("a", "local", true, 5, nil), seedFor("b", "local", true, 5, nil)}, hosted: map[string]int{"a": 2, "b": 1}, want: "b"},
		{name: "ties go by name", selector: &metav1.LabelSelector{}, region: "local",
			seeds: []lotsev1.Seed{seedFor("b", "local", true, 5, nil), seedFor("a", "local", true, 5, nil)}, want: "a"},
		{name: "own region first", selector: &metav1.LabelSelector{}, region: "eu",
			seeds: []lotsev1.Seed{seedFor("a", "us", true, 5, nil), seedFor("b", "eu", true, 5, nil)}, hosted: map[string]int{"b": 4}, want: "b"},
		{name: "another region when the own has no room", selector: &metav1.LabelSelector{}, region: "eu",
			seeds: []lotsev1.Seed{seedFor("a", "us", true, 5, nil), seedFor("b", "eu", true, 5, nil)}, hosted: map[string]int{"b": 5}, want: "a"},
		{name: "selector", selector: &metav1.LabelSelector{MatchLabels: gold}, region: "local",
			seeds: []lotsev1.Seed{seedFor("a", "local", true, 5, nil), seedFor("b", "local", true, 5, gold)}, hosted: map[string]int{"b": 3}, want: "b"},
		{name: "nothing matches", selector: &metav1.LabelSelector{MatchLabels: gold},
			seeds: []lotsev1.Seed{seedFor("a", "local", true, 5, nil)}, wantErr: "no Seed matches spec.controlPlane.seedSelector (tier=gold)"},
		{name: "no seeds at all", selector: &metav1.LabelSelector{}, wantErr: "there are no seeds"},
		{name: "every reason named", selector: &metav1.LabelSelector{},
			seeds:  []lotsev1.Seed{seedFor("a", "local", false, 5, nil), seedFor("b", "local", true, 1, nil), deleted},
			hosted: map[string]int{"b": 1}, wantErr: "a: not Ready (probe said so); b: full (1 of 1 control planes); d: being deleted"},
		{name: "zero capacity takes nothing", selector: &metav1.LabelSelector{},
			seeds: []lotsev1.Seed{seedFor("a", "local", true, 0, nil)}, wantErr: "a: full (0 of 0"},
		{name: "invalid selector", selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Bogus"}}},
			wantErr: "spec.controlPlane.seedSelector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Schedule(tt.selector, tt.region, tt.seeds, tt.hosted)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestHosted(t *testing.T) {
	cl := func(ns, name, seed string) lotsev1.Cluster {
		c := lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		c.Status.Seed = seed
		return c
	}
	count, names := Hosted([]lotsev1.Cluster{cl("a", "x", "s1"), cl("b", "y", "s1"), cl("a", "z", ""), cl("a", "w", "s2")})
	if count["s1"] != 2 || count["s2"] != 1 || len(count) != 2 {
		t.Errorf("count = %v", count)
	}
	if strings.Join(names["s1"], ",") != "a/x,b/y" {
		t.Errorf("names = %v", names)
	}
}
