package releases

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
)

const upstreamFixture = `// This is a generated file. Do not edit directly.

module k8s.io/kubernetes

go 1.25.0

godebug default=go1.23

require (
	github.com/example/dep v1.2.3
	k8s.io/api v0.0.0
	k8s.io/client-go v0.0.0
	k8s.io/kubectl v0.0.0
)

replace (
	github.com/example/dep => github.com/fork/dep v1.2.4
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/client-go => ./staging/src/k8s.io/client-go
)

replace k8s.io/kubectl => ./staging/src/k8s.io/kubectl

replace example.com/vendored => ./third_party/vendored
`

func TestKubernetesWorkModule(t *testing.T) {
	out, err := kubernetesWorkModule([]byte(upstreamFixture), "v1.36.3", "v0.36.3", componentTools())
	if err != nil {
		t.Fatalf("kubernetesWorkModule: %v", err)
	}
	f, err := modfile.Parse("go.mod", out, nil)
	if err != nil {
		t.Fatalf("generated go.mod does not parse: %v\n%s", err, out)
	}
	if f.Module == nil || f.Module.Mod.Path != "lotse.local/k8sbuild" {
		t.Errorf("module = %+v, want lotse.local/k8sbuild", f.Module)
	}
	if f.Go == nil || f.Go.Version != "1.25.0" {
		t.Errorf("go directive = %+v, want upstream's 1.25.0", f.Go)
	}
	if len(f.Godebug) != 1 || f.Godebug[0].Key != "default" || f.Godebug[0].Value != "go1.23" {
		var got []string
		for _, g := range f.Godebug {
			got = append(got, g.Key+"="+g.Value)
		}
		t.Errorf("godebug = %v, want [default=go1.23]", got)
	}
	var reqs []string
	for _, r := range f.Require {
		reqs = append(reqs, r.Mod.Path+"@"+r.Mod.Version)
	}
	if !reflect.DeepEqual(reqs, []string{"k8s.io/kubernetes@v1.36.3"}) {
		t.Errorf("require = %v, want only k8s.io/kubernetes@v1.36.3", reqs)
	}

	// Only staging modules are replaced, each by its own published tag.
	var reps []string
	for _, r := range f.Replace {
		reps = append(reps, r.Old.Path+" => "+r.New.Path+"@"+r.New.Version)
	}
	sort.Strings(reps)
	wantReps := []string{
		"k8s.io/api => k8s.io/api@v0.36.3",
		"k8s.io/client-go => k8s.io/client-go@v0.36.3",
		"k8s.io/kubectl => k8s.io/kubectl@v0.36.3",
	}
	if !reflect.DeepEqual(reps, wantReps) {
		t.Errorf("replace = %v, want %v", reps, wantReps)
	}

	var tools []string
	for _, tl := range f.Tool {
		tools = append(tools, tl.Path)
	}
	var wantTools []string
	for _, c := range Components {
		wantTools = append(wantTools, "k8s.io/kubernetes/cmd/"+c)
	}
	if !reflect.DeepEqual(tools, wantTools) {
		t.Errorf("tool = %v, want %v", tools, wantTools)
	}
	for _, bad := range []string{"./staging", "fork/dep", "third_party", "vendored"} {
		if strings.Contains(string(out), bad) {
			t.Errorf("generated go.mod mentions %q:\n%s", bad, out)
		}
	}
}

func TestKubernetesWorkModuleVariants(t *testing.T) {
	tests := []struct {
		name     string
		upstream string
		wantErr  string // substring; empty: success
		check    func(t *testing.T, f *modfile.File)
	}{
		{
			name: "no go or godebug line",
			upstream: `module k8s.io/kubernetes
replace k8s.io/api => ./staging/src/k8s.io/api
`,
			check: func(t *testing.T, f *modfile.File) {
				if f.Go != nil {
					t.Errorf("go directive %q invented", f.Go.Version)
				}
				if len(f.Godebug) != 0 {
					t.Errorf("godebug invented: %v", f.Godebug)
				}
				if len(f.Replace) != 1 || f.Replace[0].New.Version != "v0.36.3" {
					t.Errorf("replace = %+v", f.Replace)
				}
			},
		},
		{
			name: "several godebug lines",
			upstream: `module k8s.io/kubernetes
go 1.24
godebug (
	default=go1.23
	winsymlink=0
)
replace k8s.io/api => ./staging/src/k8s.io/api
`,
			check: func(t *testing.T, f *modfile.File) {
				var got []string
				for _, g := range f.Godebug {
					got = append(got, g.Key+"="+g.Value)
				}
				if !reflect.DeepEqual(got, []string{"default=go1.23", "winsymlink=0"}) {
					t.Errorf("godebug = %v", got)
				}
			},
		},
		{
			name: "no staging replaces",
			upstream: `module k8s.io/kubernetes
go 1.25.0
replace github.com/example/dep => github.com/fork/dep v1.2.4
replace example.com/local => ../local
`,
			wantErr: "no staging replace",
		},
		{
			name:     "no replaces at all",
			upstream: "module k8s.io/kubernetes\n\ngo 1.25.0\n",
			wantErr:  "no staging replace",
		},
		{
			name:     "unparsable",
			upstream: "module k8s.io/kubernetes\nthis is not go.mod syntax (\n",
			wantErr:  "parse upstream go.mod",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := kubernetesWorkModule([]byte(tt.upstream), "v1.36.3", "v0.36.3", componentTools())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q (output %q)", err, tt.wantErr, out)
				}
				return
			}
			if err != nil {
				t.Fatalf("kubernetesWorkModule: %v", err)
			}
			f, err := modfile.Parse("go.mod", out, nil)
			if err != nil {
				t.Fatalf("generated go.mod does not parse: %v\n%s", err, out)
			}
			tt.check(t, f)
		})
	}
}

func TestKonnectivityWorkModule(t *testing.T) {
	for _, version := range []string{"0.34.0", "v0.34.0"} {
		f, err := modfile.Parse("go.mod", konnectivityWorkModule(version), nil)
		if err != nil {
			t.Fatalf("%s: %v", version, err)
		}
		req := map[string]string{}
		for _, r := range f.Require {
			req[r.Mod.Path] = r.Mod.Version
		}
		// The root module replaces its client with a local directory, so
		// the work module must require the published client itself.
		want := map[string]string{konnectivityModule: "v0.34.0", konnectivityModule + "/konnectivity-client": "v0.34.0"}
		if !reflect.DeepEqual(req, want) {
			t.Errorf("%s: requires %v, want %v", version, req, want)
		}
		var tools []string
		for _, tl := range f.Tool {
			tools = append(tools, tl.Path)
		}
		sort.Strings(tools)
		if strings.Join(tools, " ") != konnectivityModule+"/cmd/agent "+konnectivityModule+"/cmd/server" {
			t.Errorf("%s: tools %v", version, tools)
		}
	}
}

func TestEveryReleaseHasATunnel(t *testing.T) {
	for _, r := range All() {
		if r.Konnectivity == "" {
			t.Errorf("release %s has no konnectivity version: its clusters' API servers could not reach their pods", r.Version)
		}
	}
}
