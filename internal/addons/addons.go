// Package addons declares the components Lotse manages inside a tenant
// cluster (CoreDNS, the tunnel agents, ...): each is rendered in Go from
// typed values into the objects that make it up. Keeping them as declared
// (applying, watching, repairing) is the keeper's job (internal/addons/keeper).
package addons

import (
	"fmt"
	"net/netip"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// FieldManager owns the fields Lotse applies.
const FieldManager = "lotse"

// Labels and annotations on managed objects.
const (
	// LabelManagedBy marks every object Lotse manages in a tenant cluster.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelAddon names the addon an object belongs to; objects carrying it
	// that are no longer declared are deleted.
	LabelAddon = "addons.lotse.dev/addon"
	// AnnotationIgnore set to "true" on an object in the tenant cluster
	// makes Lotse leave it alone (no repair, no update, no deletion) and
	// report that it does (as Gardener's resources.gardener.cloud/ignore).
	AnnotationIgnore = "lotse.dev/ignore"
)

// Resources maps the kinds addons use to their API resources; the keeper
// watches each of them in every tenant cluster.
var Resources = map[string]schema.GroupVersionResource{
	"ServiceAccount":           {Version: "v1", Resource: "serviceaccounts"},
	"ConfigMap":                {Version: "v1", Resource: "configmaps"},
	"Secret":                   {Version: "v1", Resource: "secrets"},
	"Service":                  {Version: "v1", Resource: "services"},
	"DaemonSet":                {Group: "apps", Version: "v1", Resource: "daemonsets"},
	"Deployment":               {Group: "apps", Version: "v1", Resource: "deployments"},
	"ClusterRole":              {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"ClusterRoleBinding":       {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	"Role":                     {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	"RoleBinding":              {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	"PodDisruptionBudget":      {Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"},
	"NetworkPolicy":            {Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"},
	"StorageClass":             {Group: "storage.k8s.io", Version: "v1", Resource: "storageclasses"},
	"APIService":               {Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"},
	"Namespace":                {Version: "v1", Resource: "namespaces"},
	"CustomResourceDefinition": {Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"},
}

// Addon is one managed component: a name and the objects that make it up.
type Addon struct {
	Name    string
	Objects []*unstructured.Unstructured
}

// Config shapes the addons of one cluster.
type Config struct {
	// ClusterDNS is the address of the kube-dns Service.
	ClusterDNS string
	// CoreDNSImage is the CoreDNS image reference (loaded on every node).
	CoreDNSImage string
	// Upstreams are resolvers CoreDNS forwards other names to. Empty (the
	// default for local clusters): nothing leaves the cluster.
	Upstreams []string
	// Replicas of CoreDNS.
	Replicas int
	// Tolerations CoreDNS needs to run on the cluster's nodes.
	Tolerations []Toleration
	// Tunnel configures the konnectivity agents; nil leaves them out.
	Tunnel *Tunnel
	// NetworkPolicies configures their enforcement and the default
	// policies; nil leaves both out.
	NetworkPolicies *NetworkPolicies
	// Storage configures the default StorageClass of node-local volumes;
	// nil leaves it out.
	Storage *Storage
	// Metrics configures metrics-server; nil leaves it out.
	Metrics *Metrics
	// Network selects the pod network; nil is Lotse's bridge, which needs
	// nothing in the cluster (the machines configure it).
	Network *Network
	// CloudController grants the cluster's own cloud controller manager
	// (pki.CloudControllerUser) its rights; false when the manager runs
	// the cluster's cloud controllers itself.
	CloudController bool
	// TrustDigest names the cluster's trust (pki.NodeTrustDigest); it is
	// an annotation of every managed pod template, so a rotation of the
	// cluster CA restarts the addons' pods, which read the CA bundle
	// (kube-root-ca.crt) only when they start.
	TrustDigest string
}

// AnnotationTrust is the pod-template annotation carrying Config.TrustDigest.
const AnnotationTrust = "lotse.dev/trust"

// Network plugins besides the bridge.
const (
	PluginBridge = "bridge"
	PluginCilium = "cilium"
	PluginCalico = "calico"
)

// Network configures a pod network that runs inside the cluster.
type Network struct {
	// Plugin is bridge, cilium or calico.
	Plugin string
	// PodCIDR is the cluster's pod range.
	PodCIDR string
	// APIServerHost and APIServerPort are where nodes reach the API server:
	// the network agents start before the kubernetes Service works.
	APIServerHost string
	APIServerPort int
}

// PluginEnforcesPolicies says whether the pod network enforces
// NetworkPolicies itself (Cilium and Calico do; with the bridge,
// kube-router does).
func (n *Network) PluginEnforcesPolicies() bool {
	return n != nil && n.Plugin != "" && n.Plugin != PluginBridge
}

// Toleration of an exact taint.
type Toleration struct{ Key, Value, Effect string }

// deploymentTolerations are those of the addons' Deployments: the
// critical-addons taint and the pools' own taints (so a cluster whose pools
// are all tainted still runs them), nothing broader: a NoSchedule
// toleration for everything would also tolerate a cordoned node and defeat
// draining it.
func (cfg Config) deploymentTolerations() []corev1.Toleration {
	out := []corev1.Toleration{{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists}}
	for _, t := range cfg.Tolerations {
		out = append(out, corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOpEqual, Value: t.Value, Effect: corev1.TaintEffect(t.Effect)})
	}
	return out
}

// ClusterDNS is the address of the kube-dns Service: the tenth address of
// the service range, as kubeadm chooses it.
func ClusterDNS(serviceCIDR string) string {
	p, err := netip.ParsePrefix(serviceCIDR)
	if err != nil {
		return ""
	}
	a := p.Masked().Addr()
	for i := 0; i < 10; i++ {
		a = a.Next()
	}
	return a.String()
}

// Render returns the declared addons of a cluster.
func Render(cfg Config) ([]Addon, error) {
	renderers := []struct {
		name   string
		render func(Config) ([]runtime.Object, error)
	}{
		{PodNetworkName, renderPodNetwork},
		{CoreDNSName, renderCoreDNS},
		{TunnelAgentName, renderTunnel},
		{NetworkPolicyAgentName, renderNetworkPolicyAgent},
		{DefaultNetworkPoliciesName, renderDefaultNetworkPolicies},
		{StorageName, renderStorage},
		{MetricsServerName, renderMetrics},
		{CloudControllerName, renderCloudController},
	}
	var out []Addon
	for _, r := range renderers {
		objs, err := r.render(cfg)
		if err != nil {
			return nil, fmt.Errorf("addon %s: %w", r.name, err)
		}
		if len(objs) == 0 {
			continue
		}
		a := Addon{Name: r.name}
		for _, o := range objs {
			u, err := toUnstructured(o)
			if err != nil {
				return nil, fmt.Errorf("addon %s: %w", r.name, err)
			}
			if _, ok := Resources[u.GetKind()]; !ok {
				return nil, fmt.Errorf("addon %s: object %s/%s: kind not known to the keeper", r.name, u.GetKind(), u.GetName())
			}
			labels := u.GetLabels()
			if labels == nil {
				labels = map[string]string{}
			}
			labels[LabelManagedBy] = FieldManager
			labels[LabelAddon] = r.name
			u.SetLabels(labels)
			if k := u.GetKind(); cfg.TrustDigest != "" && (k == "Deployment" || k == "DaemonSet") {
				if err := unstructured.SetNestedField(u.Object, cfg.TrustDigest, "spec", "template", "metadata", "annotations", AnnotationTrust); err != nil {
					return nil, fmt.Errorf("addon %s: %w", r.name, err)
				}
			}
			a.Objects = append(a.Objects, u)
		}
		out = append(out, a)
	}
	return out, nil
}

// PodNetworkName is the addon of a pod network that runs in the cluster.
const PodNetworkName = "pod-network"

func renderPodNetwork(cfg Config) ([]runtime.Object, error) {
	n := cfg.Network
	if n == nil || n.Plugin == "" || n.Plugin == PluginBridge {
		return nil, nil
	}
	if n.APIServerHost == "" || n.APIServerPort == 0 || n.PodCIDR == "" {
		return nil, fmt.Errorf("the API server's address and the pod range are required")
	}
	switch n.Plugin {
	case PluginCilium:
		return renderCilium(cfg)
	case PluginCalico:
		return renderCalico(cfg)
	}
	return nil, fmt.Errorf("unknown network plugin %q; use bridge, cilium or calico", n.Plugin)
}

// toUnstructured converts a typed object (with its TypeMeta set) into the
// form that is applied: no status, no null fields (creationTimestamp), so
// Lotse owns exactly the fields it declares.
func toUnstructured(o runtime.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		return nil, err
	}
	delete(m, "status")
	dropNulls(m)
	u := &unstructured.Unstructured{Object: m}
	if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
		return nil, fmt.Errorf("object %T without kind, apiVersion or name", o)
	}
	return u, nil
}

func dropNulls(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if x == nil {
				delete(v, k)
				continue
			}
			dropNulls(x)
		}
	case []any:
		for _, x := range v {
			dropNulls(x)
		}
	}
}

// WorkloadHealth says whether a live Deployment or DaemonSet is rolled out
// and available; other kinds are healthy when they exist.
func WorkloadHealth(u *unstructured.Unstructured) (bool, string, error) {
	switch u.GetKind() {
	case "Deployment":
		d := &appsv1.Deployment{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, d); err != nil {
			return false, "", err
		}
		s := d.Status
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		available := false
		for _, c := range s.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
				available = true
			}
		}
		if !available || s.AvailableReplicas == 0 || s.ObservedGeneration < d.Generation {
			return false, fmt.Sprintf("deployment %s not available yet (%d/%d ready)", d.Name, s.ReadyReplicas, want), nil
		}
		return true, fmt.Sprintf("deployment %s available (%d/%d)", d.Name, s.AvailableReplicas, want), nil
	case "DaemonSet":
		ds := &appsv1.DaemonSet{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, ds); err != nil {
			return false, "", err
		}
		s := ds.Status
		if s.ObservedGeneration < ds.Generation || s.DesiredNumberScheduled == 0 || s.NumberReady < s.DesiredNumberScheduled || s.UpdatedNumberScheduled < s.DesiredNumberScheduled {
			return false, fmt.Sprintf("daemonset %s: %d/%d pods ready and updated", ds.Name, min(s.NumberReady, s.UpdatedNumberScheduled), s.DesiredNumberScheduled), nil
		}
		return true, fmt.Sprintf("daemonset %s: %d/%d pods ready", ds.Name, s.NumberReady, s.DesiredNumberScheduled), nil
	case "APIService":
		conditions, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conditions {
			if c, ok := c.(map[string]any); ok && c["type"] == "Available" {
				if c["status"] == "True" {
					return true, fmt.Sprintf("APIService %s available", u.GetName()), nil
				}
				return false, fmt.Sprintf("APIService %s not available: %v", u.GetName(), c["message"]), nil
			}
		}
		return false, fmt.Sprintf("APIService %s not available yet", u.GetName()), nil
	}
	return true, "", nil
}
