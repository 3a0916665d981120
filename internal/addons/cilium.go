package addons

// Cilium as the pod network: upstream's Helm chart rendered at a pinned
// version by hack/render-cilium.sh into manifests/cilium.yaml (VXLAN
// tunnels, IPAM from the nodes' podCIDRs, kube-proxy kept, Hubble off).
// What differs per cluster, the API server's address, is filled in here.
// Its images come from upstream's registry, so it runs only where nodes
// can pull them.

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

//go:embed manifests/cilium.yaml
var ciliumManifest string

// CiliumVersion is the Cilium release the embedded manifest was rendered from.
var CiliumVersion = func() string {
	_, rest, _ := strings.Cut(ciliumManifest, "Helm chart ")
	v, _, _ := strings.Cut(rest, ";")
	return v
}()

func renderCilium(cfg Config) ([]runtime.Object, error) {
	n := cfg.Network
	manifest := strings.NewReplacer(
		"LOTSE_API_SERVER_HOST", n.APIServerHost,
		"LOTSE_API_SERVER_PORT", strconv.Itoa(n.APIServerPort),
	).Replace(ciliumManifest)
	return decodeManifest(manifest)
}

// decodeManifest turns a multi-document YAML manifest into objects.
func decodeManifest(manifest string) ([]runtime.Object, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(manifest)), 4096)
	var out []runtime.Object
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if len(u.Object) == 0 {
			continue // an empty document (only comments)
		}
		out = append(out, u)
	}
}
