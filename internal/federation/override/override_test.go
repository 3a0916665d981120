package override

import (
	"encoding/json"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
)

func deployment() *unstructured.Unstructured {
	var m map[string]any
	_ = json.Unmarshal([]byte(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"app":"web","tier":"a"}},
	"spec":{"replicas":2,"template":{"spec":{
	  "initContainers":[{"name":"init","image":"busybox:1.36"}],
	  "containers":[{"name":"web","image":"registry.example:5000/team/web:1.0","command":["web"],"args":["--port=80","--debug"]},
	                {"name":"side","image":"side@sha256:abc"}]}}}}`), &m)
	return &unstructured.Unstructured{Object: m}
}

func str(t *testing.T, obj *unstructured.Unstructured, path ...string) string {
	t.Helper()
	parent, last, err := walk(obj.Object, path)
	if err != nil {
		t.Fatalf("%v: %v", path, err)
	}
	b, _ := json.Marshal(parent[last])
	return string(b)
}

func TestChangeImage(t *testing.T) {
	for _, tc := range []struct {
		image, component, op, value, want string
	}{
		{"nginx:1.27", "Registry", "replace", "mirror.local", "mirror.local/nginx:1.27"},
		{"docker.io/library/nginx:1.27", "Registry", "replace", "mirror.local", "mirror.local/library/nginx:1.27"},
		{"docker.io/library/nginx", "Registry", "remove", "", "library/nginx"},
		{"registry.example:5000/team/web:1.0", "Registry", "add", "-eu", "registry.example:5000-eu/team/web:1.0"},
		{"registry.example:5000/team/web:1.0", "Repository", "replace", "team/api", "registry.example:5000/team/api:1.0"},
		{"localhost/web:1", "Tag", "replace", "2", "localhost/web:2"},
		{"web@sha256:abc", "Tag", "replace", "2", "web:2"},
		{"web:1@sha256:abc", "Repository", "add", "-canary", "web-canary:1@sha256:abc"},
		{"web:1", "Tag", "remove", "", "web"},
	} {
		got := changeImage(tc.image, policyv1.ImageOverrider{Component: tc.component, Operator: tc.op, Value: tc.value})
		if got != tc.want {
			t.Errorf("%s %s %s %q: %q, want %q", tc.image, tc.component, tc.op, tc.value, got, tc.want)
		}
	}
}

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sets    []policyv1.Overriders
		check   map[string]string // pointer -> JSON
		wantErr string
	}{
		{"tag of every container", []policyv1.Overriders{{ImageOverrider: []policyv1.ImageOverrider{{Component: "Tag", Operator: "replace", Value: "2.0"}}}},
			map[string]string{"/spec/template/spec/containers/0/image": `"registry.example:5000/team/web:2.0"`,
				"/spec/template/spec/containers/1/image": `"side:2.0"`, "/spec/template/spec/initContainers/0/image": `"busybox:2.0"`}, ""},
		{"one image by predicate", []policyv1.Overriders{{ImageOverrider: []policyv1.ImageOverrider{{Predicate: &policyv1.ImagePredicate{
			Path: "/spec/template/spec/containers/0/image"}, Component: "Registry", Operator: "replace", Value: "eu.mirror"}}}},
			map[string]string{"/spec/template/spec/containers/0/image": `"eu.mirror/team/web:1.0"`, "/spec/template/spec/containers/1/image": `"side@sha256:abc"`}, ""},
		{"predicate path missing", []policyv1.Overriders{{ImageOverrider: []policyv1.ImageOverrider{{Predicate: &policyv1.ImagePredicate{
			Path: "/spec/template/spec/containers/5/image"}, Component: "Tag", Operator: "replace", Value: "x"}}}}, nil, "does not exist"},
		{"command and args", []policyv1.Overriders{{
			CommandOverrider: []policyv1.CommandArgsOverrider{{ContainerName: "web", Operator: "add", Value: []string{"serve"}}},
			ArgsOverrider:    []policyv1.CommandArgsOverrider{{ContainerName: "web", Operator: "remove", Value: []string{"--debug"}}, {ContainerName: "side", Operator: "add", Value: []string{"-v"}}}}},
			map[string]string{"/spec/template/spec/containers/0/command": `["web","serve"]`, "/spec/template/spec/containers/0/args": `["--port=80"]`,
				"/spec/template/spec/containers/1/args": `["-v"]`}, ""},
		{"labels and annotations", []policyv1.Overriders{{
			LabelsOverrider:      []policyv1.LabelAnnotationOverrider{{Operator: "add", Value: map[string]string{"region": "eu"}}, {Operator: "remove", Value: map[string]string{"tier": ""}}, {Operator: "replace", Value: map[string]string{"app": "web-eu", "absent": "x"}}},
			AnnotationsOverrider: []policyv1.LabelAnnotationOverrider{{Operator: "add", Value: map[string]string{"note": "eu"}}}}},
			map[string]string{"/metadata/labels": `{"app":"web-eu","region":"eu"}`, "/metadata/annotations": `{"note":"eu"}`}, ""},
		{"plaintext after the others", []policyv1.Overriders{{
			ImageOverrider: []policyv1.ImageOverrider{{Component: "Tag", Operator: "replace", Value: "2.0"}},
			Plaintext: []policyv1.PlaintextOverrider{{Path: "/spec/replicas", Operator: "replace", Value: &apiextensionsv1.JSON{Raw: []byte("5")}},
				{Path: "/spec/template/spec/containers/0/image", Operator: "replace", Value: &apiextensionsv1.JSON{Raw: []byte(`"pinned:1"`)}}}}},
			map[string]string{"/spec/replicas": `5`, "/spec/template/spec/containers/0/image": `"pinned:1"`, "/spec/template/spec/containers/1/image": `"side:2.0"`}, ""},
		{"plaintext path missing", []policyv1.Overriders{{Plaintext: []policyv1.PlaintextOverrider{{Path: "/spec/nothing/here", Operator: "replace",
			Value: &apiextensionsv1.JSON{Raw: []byte("1")}}}}}, nil, "/spec/nothing/here"},
		{"sets in order: the later wins", []policyv1.Overriders{
			{LabelsOverrider: []policyv1.LabelAnnotationOverrider{{Operator: "add", Value: map[string]string{"region": "eu"}}}},
			{LabelsOverrider: []policyv1.LabelAnnotationOverrider{{Operator: "add", Value: map[string]string{"region": "us"}}}}},
			map[string]string{"/metadata/labels/region": `"us"`}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := deployment()
			err := Apply(obj, tc.sets)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for path, want := range tc.check {
				if got := str(t, obj, pointer(path)...); got != want {
					t.Errorf("%s = %s, want %s", path, got, want)
				}
			}
		})
	}
}
