package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/supervisor"
)

// TestSharedDatastore: two clusters on the shared datastore (one created
// with the CLI's --datastore flag, the other with a node that runs a pod)
// run without etcd processes of their own and keep their data apart; the choice cannot change, and backups
// are refused; while the shared etcd is frozen both clusters report it
// in their conditions, and neither it nor their API servers are
// restarted by the care controller; both recover once it runs again; deleting one
// leaves the other working.
func TestSharedDatastore(t *testing.T) {
	const a, b = "shared-a", "shared-b"
	parallel(t)
	buildEchoImage(t)
	mc := mgmtClient(t)
	ctx := context.Background()
	mustCLI(t, "cluster", "create", a, "--datastore", "shared")
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", a, "--wait", "--timeout", "5m") })
	cb := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: b, Namespace: "default"}}
	cb.Spec.ControlPlane.Datastore = lotsev1.DatastoreShared
	// With a node: Ready then means nodes and system components too.
	cb.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
	if err := mc.Create(ctx, cb); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", b, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, a)
	diagnoseOnFailure(t, b)
	waitClusterReady(t, mc, a, 5*time.Minute)
	waitClusterReady(t, mc, b, 10*time.Minute)

	for _, name := range []string{a, b} {
		for _, p := range clusterProcesses(name) {
			if componentOf(p.Name) == "etcd" {
				t.Errorf("cluster %s on the shared datastore runs an etcd of its own: %s", name, p.Name)
			}
		}
	}
	ta, tb := tenantClient(t, a), tenantClient(t, b)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "only-in-a"}, Data: map[string]string{"k": "v"}}
	if _, err := ta.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.CoreV1().ConfigMaps("default").Get(ctx, cm.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("cluster %s reading %s's ConfigMap: %v, want not found", b, a, err)
	}
	// A pod runs on b's node: scheduler, kubelet and the API all work on
	// the shared data.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "on-shared", Namespace: "default"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "echo", Image: echoImage, ImagePullPolicy: corev1.PullNever}}}}
	if _, err := tb.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "the pod running on "+b, func() (bool, error) {
		p, err := tb.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return p.Status.Phase == corev1.PodRunning, fmt.Errorf("phase %s", p.Status.Phase)
	})

	// The datastore is chosen once, and a shared cluster takes no backups.
	cl := getCluster(t, mc, a)
	cl.Spec.ControlPlane.Datastore = lotsev1.DatastoreDedicated
	if err := mc.Update(ctx, cl); err == nil || !strings.Contains(err.Error(), "spec.controlPlane.datastore cannot change in place") {
		t.Errorf("switching %s to the dedicated datastore: %v, want a refusal", a, err)
	}
	cl = getCluster(t, mc, a)
	cl.Spec.Backup = &lotsev1.BackupSpec{}
	if err := mc.Update(ctx, cl); err == nil || !strings.Contains(err.Error(), "cannot be backed up yet") {
		t.Errorf("backups for %s: %v, want a refusal", a, err)
	}

	// Freeze the shared etcd: the supervisor sees a live process, so only
	// the clusters' own probes can tell.
	var etcd supervisor.Found
	for _, f := range supervisor.FindProcesses(env.owner) {
		if strings.HasPrefix(f.Name, process.SharedDatastoreKey+"/etcd-") {
			etcd = f
		}
	}
	if etcd.PID == 0 {
		t.Fatal("no shared datastore process")
	}
	apiServers := map[string]int{}
	for _, name := range []string{a, b} {
		for _, p := range clusterProcesses(name) {
			if componentOf(p.Name) == "kube-apiserver" {
				apiServers[p.Name] = p.PID
			}
		}
	}
	if err := syscall.Kill(etcd.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = syscall.Kill(etcd.PID, syscall.SIGCONT)
		}
	})
	for _, name := range []string{a, b} {
		waitFor(t, 2*time.Minute, name+" reporting the frozen shared datastore", func() (bool, error) {
			cond := meta.FindStatusCondition(getCluster(t, mc, name).Status.Conditions, lotsev1.ConditionControlPlaneHealthy)
			return cond != nil && cond.Status == metav1.ConditionFalse && cond.LastTransitionTime.After(frozen.Add(-time.Second)) &&
				strings.Contains(cond.Message, "etcd-shared-0"), nil
		})
	}
	t.Logf("both clusters report the frozen datastore %s after the freeze", time.Since(frozen).Round(time.Second))
	// The care controller restarts a component unhealthy for 90 s (in
	// these tests) when what it depends on is healthy: neither the
	// datastore (no cluster's own) nor the API servers behind it.
	time.Sleep(time.Until(frozen.Add(2*time.Minute + 15*time.Second)))
	for _, name := range []string{a, b} {
		for _, p := range clusterProcesses(name) {
			if pid, ok := apiServers[p.Name]; ok && pid != p.PID {
				t.Errorf("%s was restarted while the shared datastore was frozen (pid %d, now %d)", p.Name, pid, p.PID)
			}
		}
	}
	for _, f := range supervisor.FindProcesses(env.owner) {
		if f.Name == etcd.Name && f.PID != etcd.PID {
			t.Errorf("the shared datastore was restarted while frozen (pid %d, now %d)", etcd.PID, f.PID)
		}
	}
	if err := syscall.Kill(etcd.PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	thawed := time.Now()
	for _, name := range []string{a, b} {
		waitFor(t, 3*time.Minute, name+" healthy again", func() (bool, error) {
			cond := meta.FindStatusCondition(getCluster(t, mc, name).Status.Conditions, lotsev1.ConditionControlPlaneHealthy)
			return cond != nil && cond.Status == metav1.ConditionTrue && cond.LastTransitionTime.After(thawed.Add(-time.Second)), nil
		})
	}
	if _, err := ta.CoreV1().ConfigMaps("default").Get(ctx, cm.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("%s's ConfigMap after the freeze: %v", a, err)
	}

	// A restore is refused before anything stops.
	if out, err := lotseCLI(t, "cluster", "restore", a, "--from", "20261201T000000Z", "--timeout", "2m"); err == nil || !strings.Contains(out, "shared datastore, which takes no restores yet") {
		t.Errorf("restoring %s: %v: %s, want a refusal", a, err, out)
	}
	if _, err := ta.CoreV1().ConfigMaps("default").Get(ctx, cm.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("%s's ConfigMap after the refused restore: %v", a, err)
	}

	mustCLI(t, "cluster", "delete", a, "--wait", "--timeout", "3m")
	if _, err := tb.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("cluster %s after %s was deleted: %v", b, a, err)
	}
}
