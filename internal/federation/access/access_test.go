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
		if k.GVR.Resource == "customresourcedefinitions" {
			continue // see TestCustomKinds
		}
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
		// CRDs propagate (TestCustomKinds); the API's other extension
		// points do not.
		{"apiextensions.k8s.io", "customresourcedefinitions", "create", "", true},
		{"apiextensions.k8s.io", "customresourcedefinitions", "watch", "", true},
		{"apiextensions.k8s.io", "customresourcedefinitions", "patch", "certificates.cert-manager.io", false},
		{"apiextensions.k8s.io", "customresourcedefinitions", "delete", "certificates.cert-manager.io", false},
		{"admissionregistration.k8s.io", "validatingwebhookconfigurations", "create", "", false},
		{"admissionregistration.k8s.io", "mutatingwebhookconfigurations", "update", "", false},
		{"apiregistration.k8s.io", "apiservices", "create", "", false},
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

func TestCustomGroups(t *testing.T) {
	for _, tc := range []struct {
		group string
		want  bool
	}{
		{"example.com", true},
		{"widgets.acme.io", true},
		{"", false},
		{"apps", false},
		{"networking.k8s.io", false},
		{"rbac.authorization.k8s.io", false},
		{"k8s.io", false},
		{"metrics.kubernetes.io", false},
		{"cluster.x-k8s.io", false},
		{"policy.lotse.dev", false},
	} {
		if got := CustomGroup(tc.group); got != tc.want {
			t.Errorf("CustomGroup(%q) = %v, want %v", tc.group, got, tc.want)
		}
	}
}

func TestCustomKinds(t *testing.T) {
	rules := Rules("r",
		Custom{CRD: "widgets.example.com", Group: "example.com", Resource: "widgets"},
		Custom{CRD: "widgets.example.com", Group: "example.com", Resource: "widgets"},
		// A CRD may claim a group of the Kubernetes project; never granted.
		Custom{CRD: "roles.rbac.authorization.k8s.io", Group: "rbac.authorization.k8s.io", Resource: "roles"},
		// A name that is not RESOURCE.GROUP is not a CRD's.
		Custom{CRD: "other.example.com", Group: "example.com", Resource: "gadgets"})
	allows := func(group, resource, verb, name string) bool {
		for _, r := range rules {
			if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) &&
				(len(r.ResourceNames) == 0 || slices.Contains(r.ResourceNames, name)) {
				return true
			}
		}
		return false
	}
	for _, tc := range []struct {
		group, resource, verb, name string
		want                        bool
	}{
		{"apiextensions.k8s.io", "customresourcedefinitions", "patch", "widgets.example.com", true},
		{"apiextensions.k8s.io", "customresourcedefinitions", "delete", "widgets.example.com", true},
		{"apiextensions.k8s.io", "customresourcedefinitions", "patch", "roles.rbac.authorization.k8s.io", false},
		{"apiextensions.k8s.io", "customresourcedefinitions", "update", "other.example.com", false},
		{"example.com", "widgets", "patch", "w", true},
		{"example.com", "widgets", "delete", "w", true},
		{"example.com", "gadgets", "patch", "g", false},
		{"rbac.authorization.k8s.io", "roles", "create", "", false},
	} {
		if got := allows(tc.group, tc.resource, tc.verb, tc.name); got != tc.want {
			t.Errorf("%s %s/%s %s: allowed %v, want %v", tc.verb, tc.group, tc.resource, tc.name, got, tc.want)
		}
	}
	for _, r := range rules {
		if slices.Contains(r.Resources, "*") && !slices.Equal(r.Verbs, []string{"list"}) {
			t.Errorf("a rule on every resource: %+v", r)
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
