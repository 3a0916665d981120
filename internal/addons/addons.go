// Package addons keeps the components Lotse manages inside a tenant
// cluster (CoreDNS today) in their desired state. Every reconcile applies
// them with server-side apply and forced ownership, so whatever a tenant
// deletes or edits comes back: drift correction is simply applying again.
package addons

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/template"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// FieldManager owns the fields Lotse applies.
const FieldManager = "lotse"

// resources maps the kinds addons use to their API resources.
var resources = map[string]schema.GroupVersionResource{
	"ServiceAccount":      {Version: "v1", Resource: "serviceaccounts"},
	"ConfigMap":           {Version: "v1", Resource: "configmaps"},
	"Secret":              {Version: "v1", Resource: "secrets"},
	"DaemonSet":           {Group: "apps", Version: "v1", Resource: "daemonsets"},
	"Service":             {Version: "v1", Resource: "services"},
	"Deployment":          {Group: "apps", Version: "v1", Resource: "deployments"},
	"ClusterRole":         {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"ClusterRoleBinding":  {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	"PodDisruptionBudget": {Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"},
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
}

// Toleration of an exact taint.
type Toleration struct{ Key, Value, Effect string }

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

func execute(t *template.Template, values map[string]any) (string, error) {
	var buf bytes.Buffer
	if err := t.Execute(&buf, values); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// Render returns the desired objects.
func Render(cfg Config) ([]*unstructured.Unstructured, error) {
	coredns, err := execute(corednsTemplate, map[string]any{
		"ClusterDNS": cfg.ClusterDNS, "Image": cfg.CoreDNSImage, "Replicas": max(cfg.Replicas, 1),
		"Forward": strings.Join(cfg.Upstreams, " "), "Tolerations": cfg.Tolerations,
	})
	if err != nil {
		return nil, err
	}
	tunnel, err := renderTunnel(cfg.Tunnel)
	if err != nil {
		return nil, err
	}
	dec := yamlutil.NewYAMLOrJSONDecoder(strings.NewReader(coredns+"\n---\n"+tunnel), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if err == io.EOF {
				break
			}
			return nil, err
		}
		if len(u.Object) == 0 {
			continue
		}
		if _, ok := resources[u.GetKind()]; !ok {
			return nil, fmt.Errorf("addon object %s/%s: kind not known to the applier", u.GetKind(), u.GetName())
		}
		out = append(out, u)
	}
	return out, nil
}

// Apply applies every object with server-side apply (forced), which
// restores deleted objects and reverts edits of the fields Lotse owns.
func Apply(ctx context.Context, dyn dynamic.Interface, objs []*unstructured.Unstructured) error {
	for _, u := range objs {
		gvr := resources[u.GetKind()]
		data, err := u.MarshalJSON()
		if err != nil {
			return err
		}
		ri := dyn.Resource(gvr)
		var r dynamic.ResourceInterface = ri
		if ns := u.GetNamespace(); ns != "" {
			r = ri.Namespace(ns)
		}
		force := true
		if _, err := r.Patch(ctx, u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: FieldManager, Force: &force}); err != nil {
			return fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return nil
}

// Health reports whether the addons are available, and if not, why.
func Health(ctx context.Context, cs kubernetes.Interface, withTunnel bool) (bool, string, error) {
	ok, msg, err := corednsHealth(ctx, cs)
	if err != nil || !withTunnel {
		return ok, msg, err
	}
	tok, tmsg, err := tunnelHealth(ctx, cs)
	if err != nil {
		return false, "", err
	}
	return ok && tok, msg + "; " + tmsg, nil
}

func corednsHealth(ctx context.Context, cs kubernetes.Interface) (bool, string, error) {
	d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, "CoreDNS deployment missing", nil
	}
	if err != nil {
		return false, "", err
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == "True" && d.Status.AvailableReplicas > 0 {
			return true, fmt.Sprintf("CoreDNS available (%d/%d)", d.Status.AvailableReplicas, d.Status.Replicas), nil
		}
	}
	return false, fmt.Sprintf("CoreDNS not available yet (%d/%d ready)", d.Status.ReadyReplicas, d.Status.Replicas), nil
}

var corednsTemplate = template.Must(template.New("coredns").Parse(`
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system, labels: {app.kubernetes.io/managed-by: lotse}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns", labels: {app.kubernetes.io/managed-by: lotse}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns", labels: {app.kubernetes.io/managed-by: lotse}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system, labels: {app.kubernetes.io/managed-by: lotse}}
data:
  Corefile: |
    .:53 {
        errors
        health {
            lameduck 5s
        }
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        prometheus :9153
{{- if .Forward }}
        forward . {{ .Forward }}
{{- end }}
        cache 30
        loop
        reload
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns, app.kubernetes.io/managed-by: lotse}}
spec:
  replicas: {{ .Replicas }}
  selector: {matchLabels: {k8s-app: kube-dns}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      # Only the critical-addons taint: a broad NoSchedule toleration would
      # also tolerate a cordoned node and defeat draining it.
      tolerations:
      - {key: CriticalAddonsOnly, operator: Exists}
{{- range .Tolerations }}
      - {key: {{ printf "%q" .Key }}, operator: Equal, value: {{ printf "%q" .Value }}, effect: {{ printf "%q" .Effect }}}
{{- end }}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector: {matchLabels: {k8s-app: kube-dns}}
      containers:
      - name: coredns
        image: {{ .Image }}
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        resources:
          requests: {cpu: 50m, memory: 40Mi}
          limits: {memory: 170Mi}
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        - {name: metrics, containerPort: 9153, protocol: TCP}
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          initialDelaySeconds: 10
          periodSeconds: 10
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
          readOnlyRootFilesystem: true
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
      volumes:
      - name: config
        configMap: {name: coredns, items: [{key: Corefile, path: Corefile}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: coredns, namespace: kube-system, labels: {app.kubernetes.io/managed-by: lotse}}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS, app.kubernetes.io/managed-by: lotse}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: {{ .ClusterDNS }}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
  - {name: metrics, port: 9153, protocol: TCP}
`))
