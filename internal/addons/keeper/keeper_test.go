package keeper

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/lotse/lotse/internal/addons"
	"github.com/lotse/lotse/internal/controlplane/process/processtest"
)

// patchCounter counts the PATCH requests (applies) a client sends.
type patchCounter struct {
	next    http.RoundTripper
	patches atomic.Int64
}

func (p *patchCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPatch {
		p.patches.Add(1)
	}
	return p.next.RoundTrip(req)
}

type recorded struct {
	mu     sync.Mutex
	events []string
}

func (r *recorded) add(eventType, reason, action, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, reason+": "+msg)
}

func (r *recorded) has(reason, substr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.events, func(e string) bool { return strings.HasPrefix(e, reason+":") && strings.Contains(e, substr) })
}

type env struct {
	keeper  *Keeper
	dyn     dynamic.Interface
	cs      kubernetes.Interface
	counter *patchCounter
	events  *recorded
	changed atomic.Int64
}

// The keeper is tested against a real API server: what it relies on
// (server-side apply, managedFields moving to whoever edits a field,
// label-filtered watches) is the API server's behaviour, not a fake's.
func newEnv(t *testing.T) *env {
	kc := processtest.ControlPlane(t)
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{counter: &patchCounter{}, events: &recorded{}}
	counted := *cfg
	counted.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { e.counter.next = rt; return e.counter }
	if e.dyn, err = dynamic.NewForConfig(&counted); err != nil {
		t.Fatal(err)
	}
	if e.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	e.keeper = &Keeper{Changed: func(string) { e.changed.Add(1) }}
	t.Cleanup(func() { e.keeper.Forget("c") })
	return e
}

func testAddons(t *testing.T, replicas int, withTunnel bool) []addons.Addon {
	t.Helper()
	cfg := addons.Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "registry.lotse.local/coredns:v1", Replicas: replicas}
	if withTunnel {
		cfg.Tunnel = &addons.Tunnel{Image: "registry.lotse.local/konnectivity-agent:v1", Host: "10.250.0.1", Port: 24000, Servers: 1,
			CA: []byte("ca"), Cert: []byte("cert"), Key: []byte("key")}
	}
	set, err := addons.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func (e *env) ensure(t *testing.T, set []addons.Addon) []State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	states, err := e.keeper.Ensure(ctx, "c", e.dyn, set, e.events.add)
	if err != nil {
		t.Fatal(err)
	}
	return states
}

func eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestKeeper(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	set := testAddons(t, 2, true)

	states := e.ensure(t, set)
	if len(states) != 2 || states[0].Name != addons.CoreDNSName || states[1].Name != addons.TunnelAgentName {
		t.Fatalf("states %+v, want coredns and konnectivity-agent", states)
	}
	if states[0].Healthy {
		t.Errorf("coredns healthy without nodes: %+v", states[0])
	}
	d, err := e.cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Labels[addons.LabelAddon] != addons.CoreDNSName || d.Labels[addons.LabelManagedBy] != "lotse" {
		t.Errorf("coredns labels %v", d.Labels)
	}

	t.Run("nothing is applied again while nothing changed", func(t *testing.T) {
		before := e.counter.patches.Load()
		e.ensure(t, testAddons(t, 2, true))
		time.Sleep(500 * time.Millisecond) // give the watches time to (wrongly) act
		if n := e.counter.patches.Load() - before; n != 0 {
			t.Errorf("%d applies although nothing changed", n)
		}
	})

	t.Run("a watch behind this process's own apply repairs nothing", func(t *testing.T) {
		ck := e.keeper.clusterFor("c", e.dyn)
		gvr := addons.Resources["ConfigMap"]
		r := ref{gvr: gvr, kind: "ConfigMap", namespace: "kube-system", name: "coredns"}
		live, ok := ck.live(r)
		if !ok {
			t.Fatalf("%s is not in the keeper's cache", r)
		}
		// As if the watch had not delivered the object's creation yet.
		store := ck.stores[gvr].GetStore()
		if err := store.Delete(live); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = store.Add(live) }()
		before := e.counter.patches.Load()
		if err := ck.sync(ctx, r); err != nil {
			t.Fatal(err)
		}
		if n := e.counter.patches.Load() - before; n != 0 || e.events.has("AddonRepaired", "recreated "+r.String()) {
			t.Errorf("%d applies (or a repair event): a repair of an object only the cache had not seen", n)
		}
	})

	t.Run("a deleted object is recreated", func(t *testing.T) {
		cm, err := e.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.cs.CoreV1().ConfigMaps("kube-system").Delete(ctx, "coredns", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the ConfigMap to come back", func() (bool, error) {
			now, err := e.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			return err == nil && now.UID != cm.UID && strings.Contains(now.Data["Corefile"], "kubernetes cluster.local"), err
		})
		eventually(t, "the repair event", func() (bool, error) {
			return e.events.has("AddonRepaired", "recreated ConfigMap kube-system/coredns"), nil
		})
	})

	t.Run("an edited field owned by Lotse is reverted", func(t *testing.T) {
		scale, err := e.cs.AppsV1().Deployments("kube-system").GetScale(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		scale.Spec.Replicas = 5
		if _, err := e.cs.AppsV1().Deployments("kube-system").UpdateScale(ctx, "coredns", scale, metav1.UpdateOptions{FieldManager: "tenant-scaler"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "replicas back at 2", func() (bool, error) {
			d, err := e.cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			return err == nil && d.Spec.Replicas != nil && *d.Spec.Replicas == 2, err
		})
		eventually(t, "the repair event naming the editor", func() (bool, error) {
			return e.events.has("AddonRepaired", "changed by tenant-scaler"), nil
		})
	})

	t.Run("a field Lotse does not own stays as the tenant set it", func(t *testing.T) {
		before := e.counter.patches.Load()
		patch := []byte(`{"metadata":{"labels":{"tenant":"mine"}}}`)
		if _, err := e.cs.CoreV1().Services("kube-system").Patch(ctx, "kube-dns", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "tenant"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		svc, err := e.cs.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if svc.Labels["tenant"] != "mine" {
			t.Errorf("the tenant's own label was removed: %v", svc.Labels)
		}
		if n := e.counter.patches.Load() - before; n != 0 {
			t.Errorf("%d applies for a change of a field Lotse does not own", n)
		}
	})

	t.Run("an object annotated to be ignored is left alone and reported", func(t *testing.T) {
		patch := []byte(`{"metadata":{"annotations":{"lotse.dev/ignore":"true"}},"data":{"Corefile":"tenant's own"}}`)
		if _, err := e.cs.CoreV1().ConfigMaps("kube-system").Patch(ctx, "coredns", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "tenant"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the ignored event", func() (bool, error) {
			return e.events.has("AddonObjectIgnored", "ConfigMap kube-system/coredns"), nil
		})
		states := e.ensure(t, testAddons(t, 2, true))
		if !slices.Equal(states[0].Ignored, []string{"ConfigMap kube-system/coredns"}) {
			t.Errorf("ignored objects %v", states[0].Ignored)
		}
		cm, err := e.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil || cm.Data["Corefile"] != "tenant's own" {
			t.Fatalf("the ignored ConfigMap was changed: %v %q", err, cm.Data["Corefile"])
		}

		// Without the annotation, Lotse takes the object back.
		patch = []byte(`{"metadata":{"annotations":{"lotse.dev/ignore":null}}}`)
		if _, err := e.cs.CoreV1().ConfigMaps("kube-system").Patch(ctx, "coredns", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "tenant"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the Corefile to be restored", func() (bool, error) {
			cm, err := e.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			return err == nil && strings.Contains(cm.Data["Corefile"], "kubernetes cluster.local"), err
		})
	})

	t.Run("a changed declaration is applied, a dropped object is deleted", func(t *testing.T) {
		e.ensure(t, testAddons(t, 1, false))
		d, err := e.cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil || *d.Spec.Replicas != 1 {
			t.Fatalf("coredns replicas: %v", err)
		}
		for _, get := range []func() error{
			func() error {
				_, err := e.cs.AppsV1().DaemonSets("kube-system").Get(ctx, addons.TunnelAgentName, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := e.cs.CoreV1().Secrets("kube-system").Get(ctx, addons.TunnelAgentName, metav1.GetOptions{})
				return err
			},
		} {
			if err := get(); !apierrors.IsNotFound(err) {
				t.Errorf("an object of the dropped tunnel addon is still there: %v", err)
			}
		}
		if !e.events.has("AddonObjectRemoved", "DaemonSet kube-system/konnectivity-agent") {
			t.Error("no event about the removed DaemonSet")
		}
	})

	t.Run("objects without the addon label are not touched", func(t *testing.T) {
		own := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "tenant-config", Namespace: "kube-system", Labels: map[string]string{addons.LabelManagedBy: "lotse"}}}
		if _, err := e.cs.CoreV1().ConfigMaps("kube-system").Create(ctx, own, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.ensure(t, testAddons(t, 1, false))
		if _, err := e.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "tenant-config", metav1.GetOptions{}); err != nil {
			t.Errorf("a ConfigMap the keeper does not manage was touched: %v", err)
		}
	})
}

func TestLotseFieldsAndEditor(t *testing.T) {
	entry := func(manager string, op metav1.ManagedFieldsOperationType, sub, fields string) metav1.ManagedFieldsEntry {
		return metav1.ManagedFieldsEntry{Manager: manager, Operation: op, Subresource: sub, FieldsV1: metav1.NewFieldsV1(fields)}
	}
	before := `{"f:data":{"f:a":{},"f:b":{}},"f:spec":{"f:replicas":{}}}`
	o := &unstructured.Unstructured{}
	o.SetManagedFields([]metav1.ManagedFieldsEntry{
		entry("lotse", metav1.ManagedFieldsOperationApply, "", `{"f:data":{"f:b":{}}}`),
		entry("lotse", metav1.ManagedFieldsOperationUpdate, "", `{"f:x":{}}`),
		entry("kubectl-edit", metav1.ManagedFieldsOperationUpdate, "", `{"f:data":{"f:a":{}}}`),
		entry("scaler", metav1.ManagedFieldsOperationUpdate, "scale", `{"f:spec":{"f:replicas":{}}}`),
		entry("kube-controller-manager", metav1.ManagedFieldsOperationUpdate, "status", `{"f:status":{"f:replicas":{}}}`),
		entry("bystander", metav1.ManagedFieldsOperationUpdate, "", `{"f:data":{"f:c":{}}}`),
	})
	if got := lotseFields(o); got != `{"f:data":{"f:b":{}}}` {
		t.Errorf("lotseFields = %s", got)
	}
	if got := editor(o, before); got != "kubectl-edit, scaler" {
		t.Errorf("editor = %q, want the managers that took Lotse's fields", got)
	}
	if got := editor(&unstructured.Unstructured{}, before); got != "someone else" {
		t.Errorf("editor of an object without entries = %s", got)
	}
}

// Cilium and Calico do not run on this host (their images come from
// registries it cannot reach), so what the tests can check is that the API
// server accepts every object as rendered: a server-side dry-run apply.
func TestPodNetworksApplyDryRun(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, plugin := range []string{addons.PluginCilium, addons.PluginCalico} {
		t.Run(plugin, func(t *testing.T) {
			set, err := addons.Render(addons.Config{ClusterDNS: "10.96.0.10", CoreDNSImage: "registry.lotse.local/coredns:v1",
				Network: &addons.Network{Plugin: plugin, PodCIDR: "10.244.0.0/16", APIServerHost: "10.250.0.1", APIServerPort: 24001}})
			if err != nil {
				t.Fatal(err)
			}
			applied := 0
			for _, a := range set {
				if a.Name != addons.PodNetworkName {
					continue
				}
				for _, o := range a.Objects {
					gvr := addons.Resources[o.GetKind()]
					data, err := o.MarshalJSON()
					if err != nil {
						t.Fatal(err)
					}
					opts := metav1.PatchOptions{FieldManager: addons.FieldManager, Force: ptr.To(true), DryRun: []string{metav1.DryRunAll}}
					if o.GetKind() == "Namespace" {
						opts.DryRun = nil // the objects inside it need it to exist
					}
					var r dynamic.ResourceInterface = e.dyn.Resource(gvr)
					if ns := o.GetNamespace(); ns != "" {
						r = e.dyn.Resource(gvr).Namespace(ns)
					}
					if _, err := r.Patch(ctx, o.GetName(), types.ApplyPatchType, data, opts); err != nil {
						t.Errorf("%s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
					}
					applied++
				}
			}
			if applied < 10 {
				t.Errorf("only %d objects in the %s rendering", applied, plugin)
			}
		})
	}
}
