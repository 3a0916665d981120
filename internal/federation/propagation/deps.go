package propagation

import (
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
)

// workloadKinds have a pod template whose references can follow them.
var workloadKinds = []string{"Deployment", "StatefulSet", "DaemonSet", "Job"}

// dependencyKinds are what a pod template refers to.
var dependencyKinds = []string{"ConfigMap", "Secret", "ServiceAccount", "PersistentVolumeClaim"}

// dependencies lists what a workload's pod template refers to, by kind:
// ConfigMaps and Secrets (volumes, projected volumes, env, envFrom, image
// pull secrets), its ServiceAccount and its PersistentVolumeClaims.
func dependencies(obj *unstructured.Unstructured) map[string][]string {
	out := map[string][]string{}
	add := func(kind, name string) {
		if name != "" && !slices.Contains(out[kind], name) {
			out[kind] = append(out[kind], name)
		}
	}
	spec, found, _ := unstructured.NestedMap(obj.Object, "spec", "template", "spec")
	if !found {
		return out
	}
	str := func(m map[string]any, path ...string) string {
		s, _, _ := unstructured.NestedString(m, path...)
		return s
	}
	if sa := str(spec, "serviceAccountName"); sa != "" && sa != "default" {
		add("ServiceAccount", sa)
	}
	if list, ok := spec["imagePullSecrets"].([]any); ok {
		for _, s := range list {
			if m, ok := s.(map[string]any); ok {
				add("Secret", str(m, "name"))
			}
		}
	}
	if vols, ok := spec["volumes"].([]any); ok {
		for _, v := range vols {
			m, ok := v.(map[string]any)
			if !ok {
				continue
			}
			add("ConfigMap", str(m, "configMap", "name"))
			add("Secret", str(m, "secret", "secretName"))
			add("PersistentVolumeClaim", str(m, "persistentVolumeClaim", "claimName"))
			if sources, ok, _ := unstructured.NestedSlice(m, "projected", "sources"); ok {
				for _, s := range sources {
					if sm, ok := s.(map[string]any); ok {
						add("ConfigMap", str(sm, "configMap", "name"))
						add("Secret", str(sm, "secret", "name"))
					}
				}
			}
		}
	}
	for _, list := range []string{"initContainers", "containers"} {
		containers, ok := spec[list].([]any)
		if !ok {
			continue
		}
		for _, c := range containers {
			cm, ok := c.(map[string]any)
			if !ok {
				continue
			}
			if env, ok := cm["env"].([]any); ok {
				for _, e := range env {
					if em, ok := e.(map[string]any); ok {
						add("ConfigMap", str(em, "valueFrom", "configMapKeyRef", "name"))
						add("Secret", str(em, "valueFrom", "secretKeyRef", "name"))
					}
				}
			}
			if envFrom, ok := cm["envFrom"].([]any); ok {
				for _, e := range envFrom {
					if em, ok := e.(map[string]any); ok {
						add("ConfigMap", str(em, "configMapRef", "name"))
						add("Secret", str(em, "secretRef", "name"))
					}
				}
			}
		}
	}
	return out
}

// followed returns the workloads in a dependency's namespace that refer
// to it and whose policies propagate their dependencies, with where their
// bindings put them.
func (e *Engine) followed(kind Kind, dep *unstructured.Unstructured) []workv1.BindingSnapshot {
	var out []workv1.BindingSnapshot
	for _, wk := range workloadKinds {
		k, _ := kindByName(wk)
		for _, obj := range e.informers.ForResource(k.GVR).Informer().GetStore().List() {
			w := obj.(*unstructured.Unstructured)
			if w.GetNamespace() != dep.GetNamespace() || !w.GetDeletionTimestamp().IsZero() {
				continue
			}
			if !slices.Contains(dependencies(w)[kind.Kind], dep.GetName()) {
				continue
			}
			// The workload's binding says whether its dependencies follow
			// (it keeps saying so when the policy is gone and the workload
			// stays where it was), and where the workload is: the members
			// it is placed on and those that still carry it (a failed
			// member keeps its copy until the replacements are healthy).
			b := e.binding(k, w.GetNamespace(), w.GetName())
			if b == nil || !b.Spec.PropagateDeps {
				continue
			}
			clusters := slices.Clone(b.Spec.Clusters)
			for _, it := range b.Status.AggregatedStatus {
				if it.Applied && !slices.ContainsFunc(clusters, func(c workv1.TargetCluster) bool { return c.Name == it.ClusterName }) {
					clusters = append(clusters, workv1.TargetCluster{Name: it.ClusterName})
				}
			}
			out = append(out, workv1.BindingSnapshot{Namespace: b.Namespace, Name: b.Name, Clusters: clusters})
		}
	}
	slices.SortFunc(out, func(a, b workv1.BindingSnapshot) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// enqueueDependencies queues the dependency templates of a workload's
// namespace: a workload that starts or stops referring to one, or moves,
// changes where it goes.
func (e *Engine) enqueueDependencies(namespace string) {
	for _, dk := range dependencyKinds {
		k, _ := kindByName(dk)
		for _, obj := range e.informers.ForResource(k.GVR).Informer().GetStore().List() {
			if u, ok := obj.(*unstructured.Unstructured); ok && u.GetNamespace() == namespace {
				e.queue.Add(key{Kind: dk, Namespace: namespace, Name: u.GetName()})
			}
		}
	}
}
