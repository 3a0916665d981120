package crd

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/lotse/lotse/internal/releases"
)

func clusterCRD(t *testing.T) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	ms, err := Manifests()
	if err != nil {
		t.Fatalf("Manifests: %v", err)
	}
	if len(ms) == 0 {
		t.Fatal("no CRD manifests embedded")
	}
	var found *apiextensionsv1.CustomResourceDefinition
	for i, m := range ms {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(m, &crd); err != nil {
			t.Fatalf("manifest %d is not a CustomResourceDefinition: %v", i, err)
		}
		if crd.Kind != "CustomResourceDefinition" || crd.APIVersion != "apiextensions.k8s.io/v1" {
			t.Errorf("manifest %d: %s/%s", i, crd.APIVersion, crd.Kind)
		}
		if crd.Name != crd.Spec.Names.Plural+"."+crd.Spec.Group {
			t.Errorf("manifest %d: name %q does not match %s.%s", i, crd.Name, crd.Spec.Names.Plural, crd.Spec.Group)
		}
		if crd.Spec.Names.Kind == "Cluster" {
			found = &crd
		}
	}
	if found == nil {
		t.Fatal("no CRD for kind Cluster")
	}
	if len(found.Spec.Versions) == 0 || found.Spec.Versions[0].Schema == nil || found.Spec.Versions[0].Schema.OpenAPIV3Schema == nil {
		t.Fatal("Cluster CRD has no schema")
	}
	return found
}

// property walks the schema's properties.
func property(t *testing.T, s *apiextensionsv1.JSONSchemaProps, path ...string) apiextensionsv1.JSONSchemaProps {
	t.Helper()
	cur := *s
	for i, p := range path {
		next, ok := cur.Properties[p]
		if !ok {
			t.Fatalf("schema has no property %s", strings.Join(path[:i+1], "."))
		}
		cur = next
	}
	return cur
}

var catalogRule = regexp.MustCompile(`^self in \[(.*)\]$`)

func TestVersionMatchesCatalog(t *testing.T) {
	crd := clusterCRD(t)
	v := property(t, crd.Spec.Versions[0].Schema.OpenAPIV3Schema, "spec", "kubernetes", "version")
	if v.Type != "string" {
		t.Errorf("spec.kubernetes.version has type %q, want string", v.Type)
	}

	if v.Default == nil {
		t.Fatal("spec.kubernetes.version has no default")
	}
	var def string
	if err := json.Unmarshal(v.Default.Raw, &def); err != nil {
		t.Fatalf("default %s is not a string: %v", v.Default.Raw, err)
	}
	if want := releases.Default().Version; def != want {
		t.Errorf("default version %q, want releases.Default() %q", def, want)
	}

	var rules []string
	var listed []string
	for _, r := range v.XValidations {
		m := catalogRule.FindStringSubmatch(r.Rule)
		if m == nil {
			continue
		}
		rules = append(rules, r.Rule)
		for _, item := range strings.Split(m[1], ",") {
			item = strings.TrimSpace(item)
			if len(item) < 2 || item[0] != '\'' || item[len(item)-1] != '\'' {
				t.Fatalf("rule %q: %q is not a quoted version", r.Rule, item)
			}
			listed = append(listed, item[1:len(item)-1])
		}
		// The message lists the same versions for the user.
		if want := "supported versions: " + strings.Join(releases.Selectable(), ", "); !strings.Contains(r.MessageExpression+r.Message, want) {
			t.Errorf("message of rule %q does not say %q: %q", r.Rule, want, r.MessageExpression+r.Message)
		}
	}
	if len(rules) != 1 {
		t.Fatalf("found %d catalog rules (self in [...]) on spec.kubernetes.version, want 1: %v", len(rules), rules)
	}
	if want := releases.Selectable(); !slices.Equal(listed, want) {
		t.Errorf("CRD allows versions %v, the catalog's selectable ones are %v (regenerate the CRD: make generate)", listed, want)
	}
}

func TestPrinterColumns(t *testing.T) {
	crd := clusterCRD(t)
	cols := map[string]apiextensionsv1.CustomResourceColumnDefinition{}
	for _, c := range crd.Spec.Versions[0].AdditionalPrinterColumns {
		cols[c.Name] = c
	}
	tests := []struct {
		name, jsonPath string
	}{
		{"Phase", ".status.phase"},
		{"Ready", `.status.conditions[?(@.type=="Ready")].status`},
		{"Endpoint", ".status.endpoint"},
		{"Version", ".spec.kubernetes.version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ok := cols[tt.name]
			if !ok {
				t.Fatalf("printer column %s missing (have %v)", tt.name, keys(cols))
			}
			if c.JSONPath != tt.jsonPath {
				t.Errorf("column %s shows %q, want %q", tt.name, c.JSONPath, tt.jsonPath)
			}
		})
	}
}

func keys(m map[string]apiextensionsv1.CustomResourceColumnDefinition) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
