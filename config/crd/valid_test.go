package crd

import (
	"context"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	"sigs.k8s.io/yaml"
)

// TestManifestsAreValid runs the API server's own CRD validation on every
// manifest, the management API's and the fleet's: CEL rules must compile
// and stay within the cost budget, or the API server refuses the CRD.
func TestManifestsAreValid(t *testing.T) {
	for name, load := range map[string]func() ([][]byte, error){"management": Manifests, "fleet": FleetManifests} {
		manifests, err := load()
		if err != nil {
			t.Fatal(err)
		}
		if len(manifests) == 0 {
			t.Fatalf("%s: no manifests", name)
		}
		for _, m := range manifests {
			var v1 apiextensionsv1.CustomResourceDefinition
			if err := yaml.UnmarshalStrict(m, &v1); err != nil {
				t.Fatal(err)
			}
			var internal apiextensions.CustomResourceDefinition
			if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1, &internal, nil); err != nil {
				t.Fatal(err)
			}
			for _, v := range internal.Spec.Versions {
				if v.Storage {
					internal.Status.StoredVersions = append(internal.Status.StoredVersions, v.Name)
				}
			}
			if errs := validation.ValidateCustomResourceDefinition(context.Background(), &internal); len(errs) > 0 {
				t.Errorf("%s CRD %s is invalid: %v", name, v1.Name, errs.ToAggregate())
			}
		}
	}
}
