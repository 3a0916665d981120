package access

import (
	"slices"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/lotse/lotse/internal/federation/propagation"
)

func TestRules(t *testing.T) {
	name := Name("default", "shop", "eu")
	rules := Rules(name)
	allows := func(group, resource, verb, resourceName string) bool {
		for _, r := range rules {
			if (slices.Contains(r.APIGroups, group) || slices.Contains(r.APIGroups, "*")) &&
				(slices.Contains(r.Resources, resource) || slices.Contains(r.Resources, "*")) &&
				slices.Contains(r.Verbs, verb) && (len(r.ResourceNames) == 0 || slices.Contains(r.ResourceNames, resourceName)) {
				return true
			}
		}
		return false
	}
	for _, k := range propagation.Kinds {
		for _, verb := range []string{"get", "list", "watch", "create", "update", "patch", "delete"} {
			if !allows(k.GVR.Group, k.GVR.Resource, verb, "x") {
				t.Errorf("the fleet may not %s %s", verb, k.GVR.Resource)
			}
		}
	}
	for _, tc := range []struct {
		group, resource, verb, name string
		want                        bool
	}{
		{"", "nodes", "watch", "", true},
		{"discovery.k8s.io", "endpointslices", "watch", "", true},
		{"discovery.k8s.io", "endpointslices", "delete", "", false},
		{"", "pods", "list", "", true},
		{"rbac.authorization.k8s.io", "clusterroles", "delete", name, true},
		{"rbac.authorization.k8s.io", "clusterroles", "delete", "cluster-admin", false},
		{"rbac.authorization.k8s.io", "clusterrolebindings", "create", "", false},
		{"rbac.authorization.k8s.io", "clusterroles", "escalate", name, false},
		{"", "pods", "create", "", false},
		{"", "nodes", "update", "", false},
		{"apiextensions.k8s.io", "customresourcedefinitions", "create", "", false},
	} {
		if got := allows(tc.group, tc.resource, tc.verb, tc.name); got != tc.want {
			t.Errorf("%s %s/%s %s: allowed %v, want %v", tc.verb, tc.group, tc.resource, tc.name, got, tc.want)
		}
	}
	for _, r := range rules {
		if slices.Contains(r.Verbs, "*") || slices.Contains(r.Verbs, "bind") || slices.Contains(r.Verbs, "impersonate") {
			t.Errorf("a rule grants %v", r.Verbs)
		}
	}
}

func TestKubeconfig(t *testing.T) {
	data, err := kubeconfig(&rest.Config{Host: "https://127.0.0.1:6443", TLSClientConfig: rest.TLSClientConfig{CAData: []byte("ca"), CertData: []byte("admin cert")}}, "fleet", "tok")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://127.0.0.1:6443" || string(cfg.CAData) != "ca" || cfg.BearerToken != "tok" || len(cfg.CertData) > 0 {
		t.Errorf("kubeconfig: host %s, ca %q, token %q, cert %q", cfg.Host, cfg.CAData, cfg.BearerToken, cfg.CertData)
	}
}
