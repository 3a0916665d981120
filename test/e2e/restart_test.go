package e2e

import (
	"context"
	"testing"
	"time"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/supervisor"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestRestartDuringCreation: killing lotse (SIGKILL) while a cluster is
// being created, then starting it again, ends with the same healthy cluster
// and exactly one process per control-plane component.
func TestRestartDuringCreation(t *testing.T) {
	const name = "restart"
	mustCLI(t, "cluster", "create", name)
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait") })
	mc := mgmtClient(t)

	// Crash once etcd runs but before the cluster is ready.
	waitFor(t, time.Minute, "etcd of the new cluster to run", func() (bool, error) {
		for _, p := range clusterProcesses(name) {
			if componentOf(p.Name) == "etcd" {
				return true, nil
			}
		}
		return false, nil
	})
	before := getCluster(t, mc, name)
	env.crash()
	t.Logf("killed lotse while the cluster was %s (%v)", before.Status.Phase, describeOp(before))

	// The control-plane processes live on without lotse.
	running := clusterProcesses(name)
	if len(running) == 0 {
		t.Fatal("control-plane processes died with lotse")
	}
	if err := env.start(); err != nil {
		t.Fatal(err)
	}
	mc = mgmtClient(t)
	cl := waitClusterReady(t, mc, name, 3*time.Minute)

	// Same cluster: same UID, endpoint stable; no duplicates.
	if cl.UID != before.UID {
		t.Errorf("cluster was recreated: uid %s, was %s", cl.UID, before.UID)
	}
	seen := map[string]int{}
	for _, p := range clusterProcesses(name) {
		seen[p.Name]++
	}
	want := []string{"etcd-0", "kube-apiserver-0", "konnectivity-server-0", "kube-controller-manager-0", "kube-scheduler-0"}
	for _, w := range want {
		if n := seen["clusters/default/"+name+"/"+w]; n != 1 {
			t.Errorf("%s: %d processes, want exactly 1", w, n)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("processes: %v, want exactly %v", seen, want)
	}
	// The processes that survived the crash were adopted, not restarted.
	for _, p := range running {
		if !stillRunning(p) {
			t.Errorf("%s (pid %d) was restarted instead of adopted", p.Name, p.PID)
		}
	}
	// The management plane itself was adopted as well: exactly one of each.
	mgmt := map[string]int{}
	for _, f := range supervisor.FindProcesses(env.owner) {
		if len(f.Name) > len("management/") && f.Name[:len("management/")] == "management/" {
			mgmt[f.Name]++
		}
	}
	for n, c := range mgmt {
		if c != 1 {
			t.Errorf("management process %s runs %d times", n, c)
		}
	}
	// The cluster still answers.
	list := &lotsev1.ClusterList{}
	if err := mc.List(context.Background(), list, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	readEtcdRaw(t, name, "/registry/namespaces/default")
}

func describeOp(c *lotsev1.Cluster) string {
	if c.Status.LastOperation == nil {
		return "no operation yet"
	}
	return c.Status.LastOperation.Description
}

func stillRunning(p supervisor.Found) bool {
	for _, f := range supervisor.FindProcesses(env.owner) {
		if f.PID == p.PID && f.StartTime == p.StartTime {
			return true
		}
	}
	return false
}
