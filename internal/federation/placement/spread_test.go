package placement

import (
	"slices"
	"strings"
	"testing"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
)

func TestSpread(t *testing.T) {
	members := []Member{
		{Name: "eu-a", Region: "eu", Zone: "eu-1", Available: 4, Labels: map[string]string{"tier": "gold"}},
		{Name: "eu-b", Region: "eu", Zone: "eu-2", Available: 9},
		{Name: "eu-c", Region: "eu", Zone: "eu-2", Available: 1, Holds: true},
		{Name: "us-a", Region: "us", Zone: "us-1", Available: 3, Labels: map[string]string{"tier": "gold"}},
		{Name: "ap-a", Region: "ap", Available: 20},
		{Name: "none", Available: 50},
	}
	byCluster := func(min, max int32) policyv1.SpreadConstraint {
		return policyv1.SpreadConstraint{SpreadByField: policyv1.SpreadByCluster, MinGroups: min, MaxGroups: max}
	}
	byRegion := func(min, max int32) policyv1.SpreadConstraint {
		return policyv1.SpreadConstraint{SpreadByField: policyv1.SpreadByRegion, MinGroups: min, MaxGroups: max}
	}
	for _, tc := range []struct {
		name        string
		constraints []policyv1.SpreadConstraint
		want        string
		wantErr     string
	}{
		{name: "none keeps all", want: "eu-a,eu-b,eu-c,us-a,ap-a,none"},
		{name: "clusters: at most 2, the one holding it first, then the roomiest",
			constraints: []policyv1.SpreadConstraint{byCluster(0, 2)}, want: "eu-c,none"},
		{name: "clusters: too few", constraints: []policyv1.SpreadConstraint{byCluster(7, 0)}, wantErr: "minGroups of the cluster constraint is 7"},
		{name: "regions: members without one are left out", constraints: []policyv1.SpreadConstraint{byRegion(0, 0)},
			want: "ap-a,eu-a,eu-b,eu-c,us-a"},
		{name: "regions: at most 2, the one holding it first, then the roomiest",
			constraints: []policyv1.SpreadConstraint{byRegion(0, 2)}, want: "ap-a,eu-a,eu-b,eu-c"},
		{name: "regions: too few", constraints: []policyv1.SpreadConstraint{byRegion(4, 0)},
			wantErr: "span 3 region group(s), minGroups is 4"},
		{name: "regions then clusters: one per region before a second in any",
			constraints: []policyv1.SpreadConstraint{byCluster(0, 3), byRegion(3, 3)}, want: "ap-a,eu-c,us-a"},
		{name: "regions then clusters: four take a second from the best region",
			constraints: []policyv1.SpreadConstraint{byRegion(3, 3), byCluster(0, 4)}, want: "ap-a,eu-b,eu-c,us-a"},
		{name: "clusters fewer than the regions needed",
			constraints: []policyv1.SpreadConstraint{byRegion(3, 0), byCluster(0, 2)}, wantErr: "less than the 3 group(s)"},
		{name: "an earlier constraint's minimum still holds after the cluster pick",
			constraints: []policyv1.SpreadConstraint{{SpreadByField: policyv1.SpreadByZone, MinGroups: 3}, byRegion(0, 0), byCluster(0, 3)},
			wantErr:     "the 3 member(s) the cluster constraint allows span 2 zone group(s), minGroups is 3"},
		{name: "zones", constraints: []policyv1.SpreadConstraint{{SpreadByField: policyv1.SpreadByZone, MaxGroups: 1}},
			want: "eu-b,eu-c"},
		{name: "by label", constraints: []policyv1.SpreadConstraint{{SpreadByLabel: "tier", MinGroups: 1}},
			want: "eu-a,us-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Spread(members, tc.constraints)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if len(tc.constraints) > 0 {
				want = sortedNames(want)
			}
			if selected(got) != want {
				t.Errorf("got %q, want %q", selected(got), want)
			}
		})
	}
}

func sortedNames(s string) string {
	names := strings.Split(s, ",")
	slices.Sort(names)
	return strings.Join(names, ",")
}
