package seed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/lotse/lotse/internal/controlplane"
)

// Connector gives access to seeds by the name of their Seed object.
type Connector interface {
	// Config returns a client configuration of the seed.
	Config(ctx context.Context, seed string) (*rest.Config, error)
	// APIServerService says how the seed exposes a control plane placed
	// on it now.
	APIServerService(ctx context.Context, seed string) (controlplane.ServiceExposure, error)
}

// fieldManager owns what Lotse applies in seeds.
const fieldManager = "lotse"

// seedClient talks to one seed.
type seedClient struct {
	cfg  *rest.Config
	kube kubernetes.Interface
	dyn  dynamic.Interface
}

// clients caches a client per seed and configuration.
type clients struct {
	mu    sync.Mutex
	byKey map[string]*seedClient
}

func (c *clients) get(ctx context.Context, conn Connector, seed string) (*seedClient, error) {
	cfg, err := conn.Config(ctx, seed)
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", seed, err)
	}
	key := seed + "\x00" + configDigest(cfg)
	c.mu.Lock()
	defer c.mu.Unlock()
	if sc, ok := c.byKey[key]; ok {
		return sc, nil
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if c.byKey == nil {
		c.byKey = map[string]*seedClient{}
	}
	for k := range c.byKey { // one client per seed: the newest configuration
		if len(k) > len(seed) && k[:len(seed)+1] == seed+"\x00" {
			delete(c.byKey, k)
		}
	}
	sc := &seedClient{cfg: cfg, kube: kube, dyn: dyn}
	c.byKey[key] = sc
	return sc, nil
}

func configDigest(cfg *rest.Config) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", cfg.Host, cfg.BearerToken)
	h.Write(cfg.CAData)
	h.Write(cfg.CertData)
	h.Write(cfg.KeyData)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// resourceOf maps the kinds Lotse applies to their resources.
var resourceOf = map[string]schema.GroupVersionResource{
	"Namespace":           {Version: "v1", Resource: "namespaces"},
	"Secret":              {Version: "v1", Resource: "secrets"},
	"ConfigMap":           {Version: "v1", Resource: "configmaps"},
	"Service":             {Version: "v1", Resource: "services"},
	"NetworkPolicy":       {Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"},
	"PodDisruptionBudget": {Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"},
	"StatefulSet":         {Group: "apps", Version: "v1", Resource: "statefulsets"},
	"Deployment":          {Group: "apps", Version: "v1", Resource: "deployments"},
}

// apply server-side-applies objects (typed, with TypeMeta) in order.
func (sc *seedClient) apply(ctx context.Context, objs ...runtime.Object) error {
	for _, obj := range objs {
		raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{Object: raw}
		// Fields a typed object always carries but nobody set.
		unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
		unstructured.RemoveNestedField(u.Object, "status")
		unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "creationTimestamp")
		gvr, ok := resourceOf[u.GetKind()]
		if !ok {
			return fmt.Errorf("no resource known for kind %s", u.GetKind())
		}
		var ri dynamic.ResourceInterface = sc.dyn.Resource(gvr)
		if ns := u.GetNamespace(); ns != "" {
			ri = sc.dyn.Resource(gvr).Namespace(ns)
		}
		if _, err := ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
			return fmt.Errorf("apply %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
	return nil
}

// patchAnnotation sets a pod-template annotation of a workload.
func (sc *seedClient) patchTemplateAnnotation(ctx context.Context, kind, namespace, name, key, value string) error {
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, key, value)
	_, err := sc.dyn.Resource(resourceOf[kind]).Namespace(namespace).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: fieldManager + "-restart"})
	return err
}

// nodeAddresses are the InternalIPs of the seed's Ready nodes, sorted:
// where the host reaches its node ports.
func (sc *seedClient) nodeAddresses(ctx context.Context) ([]string, error) {
	nodes, err := sc.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range nodes.Items {
		// A cordoned node's node ports still forward: it stays.
		if !nodeReady(&n) {
			continue
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && net.ParseIP(a.Address) != nil {
				out = append(out, a.Address)
				break
			}
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("the seed has no Ready node with an InternalIP")
	}
	return out, nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// backends joins each address with port.
func backends(addrs []string, port int32) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, net.JoinHostPort(a, strconv.Itoa(int(port))))
	}
	return out
}

// deleteOldSecrets removes a component's credential Secrets other than
// the current one.
func (sc *seedClient) deleteOldSecrets(ctx context.Context, namespace, component, current string) error {
	list, err := sc.kube.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelComponent + "=" + component + "," + LabelPartOf + "=" + partOf})
	if err != nil {
		return err
	}
	for _, s := range list.Items {
		if s.Name == current {
			continue
		}
		if err := sc.kube.CoreV1().Secrets(namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

// pruneImagePullSecret removes the image pull Secret of a control plane
// rendered without pull credentials (the manager no longer has them):
// its pods no longer name it.
func (sc *seedClient) pruneImagePullSecret(ctx context.Context, r render) error {
	if len(r.images.PullCredentials) > 0 {
		return nil
	}
	err := sc.kube.CoreV1().Secrets(r.ns()).Delete(ctx, imagePullName, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// podTrouble says why a component's first pod that is not ready is not
// (see PodTrouble). Empty when nothing tells.
func (sc *seedClient) podTrouble(ctx context.Context, namespace, component string) string {
	pods, err := sc.kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelComponent + "=" + component})
	if err != nil {
		return ""
	}
	for _, p := range pods.Items {
		if why := PodTrouble(p); why != "" {
			return why
		}
	}
	return ""
}

// PodTrouble says why a pod is not running well: unschedulable (no room,
// an unbound volume), or a container waiting (ErrImageNeverPull,
// CrashLoopBackOff) with its last exit. Empty when nothing tells.
func PodTrouble(p corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message != "" {
			return p.Name + ": " + c.Message
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" {
			msg := fmt.Sprintf("%s/%s: %s", p.Name, cs.Name, w.Reason)
			if w.Message != "" {
				msg += ": " + w.Message
			}
			if t := cs.LastTerminationState.Terminated; t != nil {
				msg += fmt.Sprintf("; last exit %d %s", t.ExitCode, t.Reason)
			}
			return truncate(msg, 300)
		}
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
