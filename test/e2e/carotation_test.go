package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// TestCARotation: the cluster CA of an HA cluster with a node rotates in
// two phases under a steady client load. Through phase 1 the load runs
// with the kubeconfig from before and no request fails; afterwards both
// the old and the new kubeconfig work. Through phase 2 a load with the
// new kubeconfig sees no failure; afterwards the old kubeconfig is
// refused, the new one works, the node is Ready on its renewed client
// certificate and the API server still reaches the kubelet (logs).
func TestCARotation(t *testing.T) {
	const name = "ca-rotating"
	parallel(t)
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.ControlPlane.HighAvailability = true
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, name)
	waitClusterReady(t, mc, name, 15*time.Minute)
	oldCfg := tenantConfig(t, name)
	deployEchoApp(t, kubernetes.NewForConfigOrDie(oldCfg), "default", "web")

	answers := func(cfg *rest.Config) error { return answersWith(ctx, cfg) }

	load := startAPILoad(t, name, "default") // with the kubeconfig from before
	start := time.Now()
	out := mustCLI(t, "cluster", "rotate", name, "ca")
	t.Logf("phase 1: %s (%s)", time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(out))
	load.finish(t)
	newCfg := tenantConfig(t, name)
	if string(newCfg.CertData) == string(oldCfg.CertData) || len(strings.Split(strings.TrimSpace(string(newCfg.CAData)), "-----END CERTIFICATE-----")) != 3 {
		t.Errorf("after phase 1 the kubeconfig should have a new client certificate and both CAs")
	}
	if err := answers(oldCfg); err != nil {
		t.Errorf("phase 1: the kubeconfig from before the rotation fails: %v", err)
	}
	if err := answers(newCfg); err != nil {
		t.Errorf("phase 1: the new kubeconfig fails: %v", err)
	}

	load = startAPILoad(t, name, "default") // with the new kubeconfig
	start = time.Now()
	mustCLI(t, "cluster", "rotate", name, "ca", "--complete")
	completed := time.Now()
	t.Logf("phase 2: %s", completed.Sub(start).Round(100*time.Millisecond))
	load.finish(t)
	if err := answers(oldCfg); err == nil {
		t.Error("phase 2: the kubeconfig from before the rotation still works")
	} else {
		t.Logf("the old kubeconfig after phase 2: %v", err)
	}
	newCfg = tenantConfig(t, name)
	if err := answers(newCfg); err != nil {
		t.Errorf("phase 2: the new kubeconfig fails: %v", err)
	}
	// Not only the client refuses the server: the server refuses the old
	// client certificate, even from a client that trusts the new CA.
	oldCert := rest.CopyConfig(oldCfg)
	oldCert.CAData = newCfg.CAData
	if err := answers(oldCert); !apierrors.IsUnauthorized(err) {
		t.Errorf("phase 2: the old client certificate with the new CA: %v, want 401 Unauthorized", err)
	}
	cs := kubernetes.NewForConfigOrDie(newCfg)
	// Evidence newer than the completion: the kubelet renewed its lease
	// (every 10 s, with its client certificate) after it, and is Ready.
	waitFor(t, 3*time.Minute, "the node's lease renewed after phase 2, and the node Ready", func() (bool, error) {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) != 1 {
			return false, err
		}
		lease, err := cs.CoordinationV1().Leases("kube-node-lease").Get(ctx, nodes.Items[0].Name, metav1.GetOptions{})
		if err != nil || lease.Spec.RenewTime == nil || !lease.Spec.RenewTime.After(completed) {
			return false, err
		}
		for _, cond := range nodes.Items[0].Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	waitFor(t, 3*time.Minute, "the logs of a pod (API server to kubelet)", func() (bool, error) {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(pods.Items) == 0 {
			return false, err
		}
		_, err = cs.CoreV1().Pods("default").GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Logf("logs: %v", err)
		}
		return err == nil, nil
	})
	waitClusterReady(t, mc, name, 5*time.Minute)
	got := getCluster(t, mc, name)
	if rs := got.Status.Credentials.Rotation.CertificateAuthorities; rs == nil || rs.Phase != lotsev1.RotationCompleted || rs.LastCompletionTime == nil {
		t.Errorf("status of the CA rotation: %+v", rs)
	}
}
