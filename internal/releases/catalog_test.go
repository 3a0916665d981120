package releases

import (
	"reflect"
	"strings"
	"testing"
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
