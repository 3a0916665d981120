package manager

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lotse/lotse/config/crd"
)

// InstallCRDs applies Lotse's CRDs and waits until they are established.
func InstallCRDs(ctx context.Context, c client.Client) error {
	manifests, err := crd.Manifests()
	if err != nil {
		return err
	}
	return crd.Apply(ctx, c, manifests)
}
