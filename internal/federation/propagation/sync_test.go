package propagation

import (
	"encoding/json"
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

func template(kind, namespace, name string, labels map[string]string, extra map[string]any) *unstructured.Unstructured {
	k, _ := kindByName(kind)
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": k.APIVersion(), "kind": kind}}
	u.SetNamespace(namespace)
	u.SetName(name)
	u.SetLabels(labels)
	for key, v := range extra {
		u.Object[key] = v
	}
	return u
}

func TestSelects(t *testing.T) {
	deploy, _ := kindByName("Deployment")
	web := template("Deployment", "shop", "web", map[string]string{"app": "web"}, nil)
	for _, tc := range []struct {
		name     string
		sel      policyv1.ResourceSelector
		policyNS string
		want     bool
	}{
		{"kind", policyv1.ResourceSelector{APIVersion: "apps/v1", Kind: "Deployment"}, "", true},
		{"other kind", policyv1.ResourceSelector{APIVersion: "apps/v1", Kind: "StatefulSet"}, "", false},
		{"other version", policyv1.ResourceSelector{APIVersion: "apps/v1beta1", Kind: "Deployment"}, "", false},
		{"name", policyv1.ResourceSelector{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"}, "", true},
		{"other name", policyv1.ResourceSelector{APIVersion: "apps/v1", Kind: "Deployment", Name: "api"}, "", false},
		{"cluster policy namespace", policyv1.ResourceSelector{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "other"}, "", false},
		{"namespaced policy only in its namespace", policyv1.ResourceSelector{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "shop"}, "other", false},
		{"labels", policyv1.ResourceSelector{APIVersion: "apps/v1", Kind: "Deployment",
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}, "shop", true},
		{"other labels", policyv1.ResourceSelector{APIVersion: "apps/v1", Kind: "Deployment",
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}}, "shop", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := selects([]policyv1.ResourceSelector{tc.sel}, deploy, web, tc.policyNS); got != tc.want {
				t.Errorf("selects = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMemberCopy(t *testing.T) {
	e := &Engine{Fleet: "default/f", Name: "f"}
	for _, tc := range []struct {
		name  string
		tmpl  *unstructured.Unstructured
		check func(t *testing.T, c *unstructured.Unstructured)
	}{
		{"deployment gets the member's replicas and loses server fields",
			template("Deployment", "shop", "web", nil, map[string]any{"spec": map[string]any{"replicas": int64(6)}, "status": map[string]any{"replicas": int64(6)}}),
			func(t *testing.T, c *unstructured.Unstructured) {
				if r, _, _ := unstructured.NestedInt64(c.Object, "spec", "replicas"); r != 2 {
					t.Errorf("replicas %d", r)
				}
				if _, ok := c.Object["status"]; ok {
					t.Error("status kept")
				}
				if c.GetUID() != "" || c.GetResourceVersion() != "" {
					t.Error("server fields kept")
				}
			}},
		{"service loses its cluster IP and node ports",
			template("Service", "shop", "web", nil, map[string]any{"spec": map[string]any{"clusterIP": "10.0.0.1", "clusterIPs": []any{"10.0.0.1"},
				"ports": []any{map[string]any{"port": int64(80), "nodePort": int64(30080)}}}}),
			func(t *testing.T, c *unstructured.Unstructured) {
				if _, ok, _ := unstructured.NestedString(c.Object, "spec", "clusterIP"); ok {
					t.Error("clusterIP kept")
				}
				ports, _, _ := unstructured.NestedSlice(c.Object, "spec", "ports")
				if _, ok := ports[0].(map[string]any)["nodePort"]; ok || ports[0].(map[string]any)["port"] != int64(80) {
					t.Errorf("ports %v", ports)
				}
			}},
		{"job loses its generated selector",
			template("Job", "shop", "once", nil, map[string]any{"spec": map[string]any{"selector": map[string]any{}, "template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"controller-uid": "x", "app": "once"}}}}}),
			func(t *testing.T, c *unstructured.Unstructured) {
				if _, ok, _ := unstructured.NestedMap(c.Object, "spec", "selector"); ok {
					t.Error("selector kept")
				}
				l, _, _ := unstructured.NestedStringMap(c.Object, "spec", "template", "metadata", "labels")
				if _, ok := l["controller-uid"]; ok || l["app"] != "once" {
					t.Errorf("template labels %v", l)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, _ := kindByName(tc.tmpl.GetKind())
			tc.tmpl.SetUID("u-1")
			tc.tmpl.SetResourceVersion("7")
			c := e.memberCopy(k, tc.tmpl, 2)
			if c.GetLabels()[lotsev1.LabelFleet] != "f" || c.GetAnnotations()[AnnotationFleet] != "default/f" ||
				c.GetAnnotations()[AnnotationTemplate] != tc.tmpl.GetNamespace()+"/"+tc.tmpl.GetName() {
				t.Errorf("marks: %v %v", c.GetLabels(), c.GetAnnotations())
			}
			tc.check(t, c)
		})
	}
}

func TestDependencies(t *testing.T) {
	var spec map[string]any
	_ = json.Unmarshal([]byte(`{"template":{"spec":{
	  "serviceAccountName":"runner","imagePullSecrets":[{"name":"pull"}],
	  "volumes":[{"name":"a","configMap":{"name":"cm-vol"}},{"name":"b","secret":{"secretName":"s-vol"}},
	             {"name":"c","persistentVolumeClaim":{"claimName":"data"}},
	             {"name":"d","projected":{"sources":[{"configMap":{"name":"cm-proj"}},{"secret":{"name":"s-proj"}}]}}],
	  "initContainers":[{"name":"i","envFrom":[{"configMapRef":{"name":"cm-envfrom"}}]}],
	  "containers":[{"name":"c","env":[{"name":"X","valueFrom":{"secretKeyRef":{"name":"s-env","key":"k"}}},
	                                   {"name":"Y","valueFrom":{"configMapKeyRef":{"name":"cm-vol","key":"k"}}}],
	                 "envFrom":[{"secretRef":{"name":"s-envfrom"}}]}]}}}`), &spec)
	got := dependencies(template("Deployment", "shop", "web", nil, map[string]any{"spec": spec}))
	want := map[string][]string{
		"ConfigMap":             {"cm-vol", "cm-proj", "cm-envfrom"},
		"Secret":                {"pull", "s-vol", "s-proj", "s-env", "s-envfrom"},
		"ServiceAccount":        {"runner"},
		"PersistentVolumeClaim": {"data"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("dependencies:\n got %v\nwant %v", got, want)
	}
	if deps := dependencies(template("Deployment", "shop", "bare", nil, nil)); len(deps) != 0 {
		t.Errorf("a template without pod spec: %v", deps)
	}
}

func crd(group, kind, plural, scope string, versions []any, established bool) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": plural + "." + group},
		"spec": map[string]any{"group": group, "scope": scope, "versions": versions,
			"names": map[string]any{"kind": kind, "plural": plural}},
	}}
	if established {
		u.Object["status"] = map[string]any{"conditions": []any{map[string]any{"type": "Established", "status": "True"}}}
	}
	return u
}

func TestKindOfCRD(t *testing.T) {
	stored := func(name string) map[string]any { return map[string]any{"name": name, "served": true, "storage": true} }
	served := func(name string) map[string]any {
		return map[string]any{"name": name, "served": true, "storage": false}
	}
	for _, tc := range []struct {
		name            string
		crd             *unstructured.Unstructured
		wantGVR         string
		wantNamespaced  bool
		wantEstablished bool
	}{
		{"namespaced, established", crd("example.com", "Widget", "widgets", "Namespaced", []any{stored("v1")}, true), "example.com/v1, Resource=widgets", true, true},
		{"cluster-scoped", crd("example.com", "Gadget", "gadgets", "Cluster", []any{stored("v1")}, true), "example.com/v1, Resource=gadgets", false, true},
		{"the storage version is the one watched", crd("example.com", "Widget", "widgets", "Namespaced", []any{served("v1beta1"), stored("v1")}, true), "example.com/v1, Resource=widgets", true, true},
		{"not established yet", crd("example.com", "Widget", "widgets", "Namespaced", []any{stored("v1")}, false), "example.com/v1, Resource=widgets", true, false},
		{"Lotse's own policies never", crd("policy.lotse.dev", "PropagationPolicy", "propagationpolicies", "Namespaced", []any{stored("v1alpha1")}, true), "policy.lotse.dev/v1alpha1, Resource=propagationpolicies", true, false},
		{"Lotse's own bindings never", crd("work.lotse.dev", "ResourceBinding", "resourcebindings", "Namespaced", []any{stored("v1alpha1")}, true), "work.lotse.dev/v1alpha1, Resource=resourcebindings", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, established := kindOfCRD(tc.crd)
			if k.GVR.String() != tc.wantGVR || k.Namespaced != tc.wantNamespaced || established != tc.wantEstablished || !k.Custom {
				t.Errorf("kindOfCRD = %+v, %v; want %s namespaced %v established %v", k, established, tc.wantGVR, tc.wantNamespaced, tc.wantEstablished)
			}
		})
	}
}

func TestKindIDs(t *testing.T) {
	for _, tc := range []struct{ apiVersion, kind, want string }{
		{"apps/v1", "Deployment", "Deployment"},
		{"v1", "ConfigMap", "ConfigMap"},
		{"apiextensions.k8s.io/v1", "CustomResourceDefinition", "CustomResourceDefinition"},
		{"example.com/v1", "Widget", "Widget.example.com"},
		// A custom kind named like a built-in one is not taken for it.
		{"example.com/v1", "Deployment", "Deployment.example.com"},
	} {
		if got := kindID(tc.apiVersion, tc.kind); got != tc.want {
			t.Errorf("kindID(%s, %s) = %s, want %s", tc.apiVersion, tc.kind, got, tc.want)
		}
	}
	k, _ := kindOfCRD(crd("example.com", "Deployment", "deployments", "Namespaced", []any{map[string]any{"name": "v1", "served": true, "storage": true}}, true))
	if k.ID() != "Deployment.example.com" {
		t.Errorf("ID of a custom Deployment = %s", k.ID())
	}
	if generated("CustomResourceDefinition", crd("policy.lotse.dev", "PropagationPolicy", "propagationpolicies", "Namespaced", nil, true)) == false {
		t.Error("the fleet's own policy CRD would propagate")
	}
	if generated("CustomResourceDefinition", crd("example.com", "Widget", "widgets", "Namespaced", nil, true)) {
		t.Error("an application's CRD would not propagate")
	}
}

func TestBindingNamesOfCustomKinds(t *testing.T) {
	widget, _ := kindOfCRD(crd("example.com", "Widget", "widgets", "Namespaced", []any{map[string]any{"name": "v1", "served": true, "storage": true}}, true))
	other, _ := kindOfCRD(crd("example.org", "Widget", "widgets", "Namespaced", []any{map[string]any{"name": "v1", "served": true, "storage": true}}, true))
	svc, _ := kindOfCRD(crd("example.com", "Service", "services", "Namespaced", []any{map[string]any{"name": "v1", "served": true, "storage": true}}, true))
	builtin, _ := kindByName("Service")
	names := map[string]bool{}
	for _, k := range []Kind{widget, other, svc, builtin} {
		names[BindingName("x", k.ID())] = true
	}
	if len(names) != 4 {
		t.Errorf("binding names collide: %v", names)
	}
	if got := BindingName("web", builtin.ID()); got != "web-service" {
		t.Errorf("a built-in kind's binding is %s, want web-service (Karmada's scheme)", got)
	}
	if got := BindingName("small", widget.ID()); got != "small-widget.example.com" {
		t.Errorf("a custom kind's binding is %s", got)
	}
}

func TestCustomKindSelectionAndHealth(t *testing.T) {
	k, _ := kindOfCRD(crd("example.com", "Widget", "widgets", "Namespaced", []any{
		map[string]any{"name": "v1beta1", "served": true, "storage": false},
		map[string]any{"name": "v1", "served": true, "storage": true},
		map[string]any{"name": "v1alpha1", "served": false, "storage": false}}, true))
	w := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "example.com/v1", "kind": "Widget"}}
	w.SetNamespace("shop")
	w.SetName("small")
	for _, tc := range []struct {
		apiVersion string
		want       bool
	}{
		{"example.com/v1", true},
		{"example.com/v1beta1", true}, // served, not stored: still the same objects
		{"example.com/v1alpha1", false},
		{"example.org/v1", false},
		{"v1", false},
	} {
		if got := selects([]policyv1.ResourceSelector{{APIVersion: tc.apiVersion, Kind: "Widget"}}, k, w, ""); got != tc.want {
			t.Errorf("a selector of %s: %v, want %v", tc.apiVersion, got, tc.want)
		}
	}
	if deploy, _ := kindByName("Deployment"); deploy.served("apps/v1beta2") {
		t.Error("a built-in kind matched another version")
	}
	for _, tc := range []struct {
		name       string
		conditions []any
		want       string
	}{
		{"no conditions", nil, "Healthy"},
		{"ready", []any{map[string]any{"type": "Ready", "status": "True"}}, "Healthy"},
		{"not ready", []any{map[string]any{"type": "Ready", "status": "False"}}, "Unhealthy"},
		{"not available", []any{map[string]any{"type": "Available", "status": "False"}}, "Unhealthy"},
		{"another condition false", []any{map[string]any{"type": "Degraded", "status": "False"}}, "Healthy"},
	} {
		obj := w.DeepCopy()
		if tc.conditions != nil {
			obj.Object["status"] = map[string]any{"conditions": tc.conditions}
		}
		if got := health(k.ID(), obj); got != tc.want {
			t.Errorf("%s: health %s, want %s", tc.name, got, tc.want)
		}
	}
}
