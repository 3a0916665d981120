package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// TestAddons: one cluster with two nodes whose managed components are
// kept as declared: what a tenant deletes or edits comes back (with an
// event on the Cluster saying so), an object annotated lotse.dev/ignore is
// left alone and reported in status.addons.
func TestAddons(t *testing.T) {
	const name = "addons"
	t.Parallel()
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "pool", Minimum: 2, Maximum: 3, MaxSurge: 1}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	waitClusterReady(t, mc, name, 15*time.Minute)
	waitCondition(t, mc, name, lotsev1.ConditionSystemComponentsHealthy, time.Time{}, 5*time.Minute)
	cs := tenantClient(t, name)

	cl := getCluster(t, mc, name)
	var names []string
	for _, a := range cl.Status.Addons {
		names = append(names, a.Name)
		if !a.Healthy {
			t.Errorf("addon %s not healthy: %s", a.Name, a.Message)
		}
	}
	for _, want := range []string{"coredns", "konnectivity-agent"} {
		if !slices.Contains(names, want) {
			t.Errorf("status.addons %v lacks %s", names, want)
		}
	}

	if !t.Run("a deleted Deployment comes back", func(t *testing.T) {
		before, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		if err := cs.AppsV1().Deployments("kube-system").Delete(ctx, "coredns", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "a new CoreDNS Deployment", func() (bool, error) {
			d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			return err == nil && d.UID != before.UID, err
		})
		t.Logf("CoreDNS Deployment recreated %s after its deletion", time.Since(deleted).Round(time.Millisecond))
		waitClusterEvent(t, name, "AddonRepaired", "recreated Deployment kube-system/coredns")
		waitCondition(t, mc, name, lotsev1.ConditionSystemComponentsHealthy, deleted, 3*time.Minute)
	}) {
		return
	}

	if !t.Run("an edited managed field is reverted", func(t *testing.T) {
		patch := []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"coredns","args":["-conf","/tmp/tenant"]}]}}}}`)
		if _, err := cs.AppsV1().Deployments("kube-system").Patch(ctx, "coredns", types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: "tenant-edit"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "CoreDNS args reverted", func() (bool, error) {
			d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			return err == nil && slices.Equal(d.Spec.Template.Spec.Containers[0].Args, []string{"-conf", "/etc/coredns/Corefile"}), err
		})
		waitClusterEvent(t, name, "AddonRepaired", "changed by tenant-edit")
	}) {
		return
	}

	t.Run("an annotated object is left alone and reported", func(t *testing.T) {
		patch := []byte(`{"metadata":{"annotations":{"lotse.dev/ignore":"true"}},"data":{"Corefile":".:53 {\n    errors\n    kubernetes cluster.local\n}\n"}}`)
		if _, err := cs.CoreV1().ConfigMaps("kube-system").Patch(ctx, "coredns", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "tenant-edit"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "status.addons to report the ignored ConfigMap", func() (bool, error) {
			for _, a := range getCluster(t, mc, name).Status.Addons {
				if a.Name == "coredns" && slices.Contains(a.Ignored, "ConfigMap kube-system/coredns") {
					return true, nil
				}
			}
			return false, nil
		})
		time.Sleep(2 * time.Second) // a keeper that did not honour the annotation would have acted by now
		cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil || strings.Contains(cm.Data["Corefile"], "prometheus") {
			t.Errorf("the ignored ConfigMap was reverted: %v", err)
		}
		patch = []byte(`{"metadata":{"annotations":{"lotse.dev/ignore":null}}}`)
		if _, err := cs.CoreV1().ConfigMaps("kube-system").Patch(ctx, "coredns", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "tenant-edit"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the Corefile restored once the annotation is gone", func() (bool, error) {
			cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			return err == nil && strings.Contains(cm.Data["Corefile"], "prometheus"), err
		})
	})
}

// waitClusterEvent waits for an event on a Cluster with the given reason
// whose note contains substr.
func waitClusterEvent(t testing.TB, cluster, reason, substr string) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", env.kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	waitFor(t, 30*time.Second, "event "+reason+" on cluster "+cluster, func() (bool, error) {
		list, err := cs.EventsV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "regarding.name=" + cluster})
		if err != nil {
			return false, err
		}
		var seen []string
		for _, e := range list.Items {
			seen = append(seen, e.Reason+": "+e.Note)
			if e.Reason == reason && strings.Contains(e.Note, substr) {
				return true, nil
			}
		}
		return false, fmt.Errorf("events so far: %q", seen)
	})
}
