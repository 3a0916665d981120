package releases

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in      string
		want    Version
		wantErr bool
	}{
		{in: "1.36.3", want: Version{1, 36, 3}},
		{in: "v1.36.3", want: Version{1, 36, 3}},
		{in: "0.0.0", want: Version{0, 0, 0}},
		{in: "10.200.3000", want: Version{10, 200, 3000}},
		{in: "", wantErr: true},
		{in: "v", wantErr: true},
		{in: "1.36", wantErr: true},
		{in: "1.36.3.4", wantErr: true},
		{in: "1.36.x", wantErr: true},
		{in: "1.-1.3", wantErr: true},
		{in: "1.36.3-rc.0", wantErr: true},
		{in: "vv1.36.3", wantErr: true},
		{in: " 1.36.3", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseVersion(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseVersion(%q) = %+v, want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), "MAJOR.MINOR.PATCH") {
					t.Errorf("error %q should explain the expected form", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseVersion(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseVersion(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestVersionLess(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"1.35.4", "1.36.3", true},
		{"1.36.3", "1.35.4", false},
		{"1.36.3", "1.36.3", false},
		{"1.36.2", "1.36.3", true},
		{"1.36.10", "1.36.9", false}, // numeric, not lexical
		{"1.9.0", "1.10.0", true},
		{"0.99.99", "1.0.0", true},
		{"2.0.0", "1.99.99", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+"<"+tt.b, func(t *testing.T) {
			a, err := ParseVersion(tt.a)
			if err != nil {
				t.Fatal(err)
			}
			b, err := ParseVersion(tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Less(b); got != tt.want {
				t.Errorf("%s.Less(%s) = %t, want %t", tt.a, tt.b, got, tt.want)
			}
		})
	}
}

func TestSortNewestFirst(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"empty", []string{}, []string{}},
		{"already sorted", []string{"1.36.3", "1.35.4"}, []string{"1.36.3", "1.35.4"}},
		{"reversed", []string{"1.34.1", "1.35.4", "1.36.3"}, []string{"1.36.3", "1.35.4", "1.34.1"}},
		{"numeric minor", []string{"1.9.0", "1.10.0", "1.100.0"}, []string{"1.100.0", "1.10.0", "1.9.0"}},
		{"patches", []string{"1.36.2", "1.36.10", "1.36.3"}, []string{"1.36.10", "1.36.3", "1.36.2"}},
		{"v prefix kept", []string{"v1.35.0", "1.36.0"}, []string{"1.36.0", "v1.35.0"}},
		{"unparsable last, in original order", []string{"junk", "1.35.4", "zzz", "1.36.3"}, []string{"1.36.3", "1.35.4", "junk", "zzz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := append([]string{}, tt.in...)
			SortNewestFirst(got)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("SortNewestFirst(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "1.36.3", want: "1.36.3"},
		{in: "v1.36.3", want: "1.36.3"},
		{in: "1.35.4", want: "1.35.4"},
		{in: "v1.35.4", want: "1.35.4"},
		{in: "1.36.2", wantErr: true},
		{in: "1.36", wantErr: true},
		{in: "", wantErr: true},
		{in: "latest", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := Lookup(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Lookup(%q) = %+v, want an error", tt.in, r)
				}
				msg := err.Error()
				if !strings.Contains(msg, "supported versions: "+strings.Join(Versions(), ", ")) {
					t.Errorf("error %q does not list the supported versions %v", msg, Versions())
				}
				if !strings.Contains(msg, `"`+tt.in+`"`) {
					t.Errorf("error %q does not name the requested version", msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lookup(%q): %v", tt.in, err)
			}
			if r.Version != tt.want {
				t.Errorf("Lookup(%q).Version = %q, want %q", tt.in, r.Version, tt.want)
			}
			if r.Etcd == "" {
				t.Errorf("release %s has no etcd version", r.Version)
			}
		})
	}
}

func TestCatalogInvariants(t *testing.T) {
	all := All()
	if len(all) == 0 {
		t.Fatal("catalog is empty")
	}
	vs := Versions()
	if len(vs) != len(all) {
		t.Fatalf("Versions() has %d entries, All() %d", len(vs), len(all))
	}
	sorted := append([]string{}, vs...)
	SortNewestFirst(sorted)
	if !reflect.DeepEqual(vs, sorted) {
		t.Errorf("catalog is not newest first: %v (sorted: %v)", vs, sorted)
	}
	// Default is the newest release of the catalog.
	newest, err := ParseVersion(Default().Version)
	if err != nil {
		t.Fatalf("Default() version: %v", err)
	}
	minors := map[int]bool{}
	for i, r := range all {
		if r.Version != vs[i] {
			t.Errorf("All()[%d] = %s, Versions()[%d] = %s", i, r.Version, i, vs[i])
		}
		v, err := ParseVersion(r.Version)
		if err != nil {
			t.Errorf("catalog version %q: %v", r.Version, err)
			continue
		}
		if newest.Less(v) {
			t.Errorf("Default() %s is older than catalog entry %s", Default().Version, r.Version)
		}
		if strings.HasPrefix(r.Version, "v") {
			t.Errorf("catalog version %q has a leading v", r.Version)
		}
		if _, err := ParseVersion(r.Etcd); err != nil {
			t.Errorf("release %s: etcd version %q: %v", r.Version, r.Etcd, err)
		}
		// Only the newest patch of each minor is kept.
		if minors[v.Minor] {
			t.Errorf("minor %d appears twice in the catalog", v.Minor)
		}
		minors[v.Minor] = true
		if r.Minor() != v.Minor {
			t.Errorf("Release{%s}.Minor() = %d, want %d", r.Version, r.Minor(), v.Minor)
		}
	}
	if Default().Version != all[0].Version {
		t.Errorf("Default() = %s, want the first (newest) entry %s", Default().Version, all[0].Version)
	}
	// All returns a copy: changing it does not change the catalog.
	all[0].Version = "0.0.0"
	if All()[0].Version == "0.0.0" || Default().Version == "0.0.0" {
		t.Error("All() exposes the catalog itself")
	}
}

func TestClassificationAt(t *testing.T) {
	day := func(s string) time.Time { d, _ := time.Parse(time.DateOnly, s); return d }
	r := Release{Version: "1.35.4", Classification: Deprecated, ExpirationDate: "2027-02-28"}
	tests := []struct {
		name string
		r    Release
		now  time.Time
		want Classification
	}{
		{"before expiration", r, day("2027-02-27"), Deprecated},
		{"on the day", r, day("2027-02-28"), Expired},
		{"after", r, day("2028-01-01"), Expired},
		{"no date", Release{Version: "1.37.2", Classification: Supported}, day("2099-01-01"), Supported},
		{"expired in the catalog", Release{Version: "1.34.0", Classification: Expired}, day("2020-01-01"), Expired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.ClassificationAt(tt.now); got != tt.want {
				t.Errorf("ClassificationAt(%s) = %s, want %s", tt.now.Format(time.DateOnly), got, tt.want)
			}
		})
	}
}

func TestCheckTarget(t *testing.T) {
	today := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	later := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC) // 1.35 has expired
	tests := []struct {
		name, from, to string
		now            time.Time
		wantErr        string
	}{
		{"new cluster, newest", "", "1.37.2", today, ""},
		{"new cluster, deprecated", "", "1.35.4", today, ""},
		{"new cluster, expired", "", "1.35.4", later, "kubernetes 1.35.4 expired on 2027-02-28; choose a supported version: 1.37.2, 1.36.3"},
		{"staying on an expired version", "1.35.4", "1.35.4", later, ""},
		{"one minor up", "1.36.3", "1.37.2", today, ""},
		{"patch up", "1.36.1", "1.36.3", today, ""},
		{"skip a minor", "1.35.4", "1.37.2", today, "skips a minor version; upgrade to 1.36 first"},
		{"downgrade", "1.37.2", "1.36.3", today, "downgrade from 1.37.2 to 1.36.3 is not supported"},
		{"not in the catalog", "1.36.3", "1.36.9", today, "not in the catalog"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckTarget(tt.from, tt.to, tt.now)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckTarget(%q, %q): %v", tt.from, tt.to, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckTarget(%q, %q) = %v, want an error containing %q", tt.from, tt.to, err, tt.wantErr)
			}
		})
	}
}

func TestNextSupported(t *testing.T) {
	today := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	later := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name, from string
		now        time.Time
		want       string
		ok         bool
	}{
		{"older patch of a supported minor", "1.36.1", today, "1.36.3", true},
		{"newest patch already", "1.37.2", today, "1.37.2", true},
		{"expired minor goes one minor up", "1.35.4", later, "1.36.3", true},
		{"unknown minor", "1.30.0", today, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := NextSupported(tt.from, tt.now)
			if ok != tt.ok || got.Version != tt.want {
				t.Errorf("NextSupported(%s) = %q, %v; want %q, %v", tt.from, got.Version, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestSelectableExcludesExpired(t *testing.T) {
	sel := Selectable()
	for _, r := range All() {
		if got, want := slices.Contains(sel, r.Version), r.Classification != Expired; got != want {
			t.Errorf("Selectable() contains %s = %v, want %v (classification %s)", r.Version, got, want, r.Classification)
		}
		if r.Classification == "" {
			t.Errorf("release %s has no classification", r.Version)
		}
		if r.Classification == Deprecated {
			if _, ok := r.Expiration(); !ok {
				t.Errorf("deprecated release %s has no valid expiration date (%q)", r.Version, r.ExpirationDate)
			}
		}
	}
}
