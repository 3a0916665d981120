package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/supervisor"
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

// TestRestartDuringUpgrade: killing lotse twice during an upgrade (after
// etcd was replaced, and while the pool rolls, with a machine of each
// version), then starting it again, finishes the upgrade: every process at
// the new version, exactly one of each, and the pool's one machine
// replaced once, never doubled beyond its surge.
func TestRestartDuringUpgrade(t *testing.T) {
	const name = "restart-up"
	from, to := upgradeFrom(t), releases.Default().Version
	mc := mgmtClient(t)
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Kubernetes.Version = from
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
	if err := mc.Create(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, name)
	waitClusterReady(t, mc, name, 15*time.Minute)
	first := listMachines(t, mc, name)[0]
	updateCluster(t, mc, name, func(c *lotsev1.Cluster) { c.Spec.Kubernetes.Version = to })
	newEtcd := "/etcd/" + releases.Default().Etcd + "/"
	waitFor(t, 2*time.Minute, "etcd replaced by the new version", func() (bool, error) {
		for _, p := range clusterProcesses(name) {
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID)); err == nil && componentOf(p.Name) == "etcd" && strings.Contains(exe, newEtcd) {
				return true, nil
			}
		}
		return false, nil
	})
	env.crash()
	t.Logf("killed lotse with etcd at the new version")
	if err := env.start(); err != nil {
		t.Fatal(err)
	}
	mc = mgmtClient(t)

	// The roll: a new machine exists beside the old one.
	waitFor(t, 5*time.Minute, "a machine at the new version beside the old one", func() (bool, error) {
		ms := listMachines(t, mc, name)
		return len(ms) == 2 && ms[0].Spec.Version != ms[1].Spec.Version, nil
	})
	env.crash()
	t.Logf("killed lotse during the pool's roll")
	if err := env.start(); err != nil {
		t.Fatal(err)
	}
	mc = mgmtClient(t)
	waitFor(t, 5*time.Minute, name+" upgraded after the restarts", func() (bool, error) {
		if n := len(listMachines(t, mc, name)); n > 2 {
			t.Errorf("%d machines in a pool of 1 with maxSurge 1", n)
		}
		c := getCluster(t, mc, name)
		return c.Status.KubernetesVersion == to && c.Status.Upgrade == nil && c.Status.Phase == lotsev1.PhaseRunning, fmt.Errorf("%s", describeOp(c))
	})
	seen := map[string]int{}
	for _, p := range clusterProcesses(name) {
		seen[componentOf(p.Name)]++
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
		if err != nil {
			continue
		}
		switch c := componentOf(p.Name); c {
		case "etcd":
			if !strings.Contains(exe, newEtcd) {
				t.Errorf("%s runs %s", p.Name, exe)
			}
		case "kube-apiserver", "kube-controller-manager", "kube-scheduler":
			if !strings.Contains(exe, "/kubernetes/"+to+"/") {
				t.Errorf("%s runs %s", p.Name, exe)
			}
		}
	}
	for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "konnectivity-server"} {
		if seen[c] != 1 {
			t.Errorf("%s: %d processes, want 1 (all: %v)", c, seen[c], seen)
		}
	}
	ms := listMachines(t, mc, name)
	if len(ms) != 1 || ms[0].Name == first.Name || ms[0].Spec.Version != to {
		t.Errorf("machines after the roll: %v; want one new machine at %s instead of %s", machineSummary(ms), to, first.Name)
	}
}

func machineSummary(ms []lotsev1.Machine) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name+"@"+m.Spec.Version)
	}
	return out
}

// TestRestartDuringHibernation: killing lotse while a cluster goes to
// sleep (its machine being stopped) and while it wakes (the control plane
// starting) and starting lotse again ends where the spec says: asleep
// with nothing running, then awake with its node Ready and uncordoned.
func TestRestartDuringHibernation(t *testing.T) {
	const name = "restart-sleep"
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, name)
	waitClusterReady(t, mc, name, 15*time.Minute)

	mustCLI(t, "cluster", "hibernate", name)
	waitFor(t, 2*time.Minute, "the machine told to stop", func() (bool, error) {
		ms := listMachines(t, mc, name)
		return len(ms) == 1 && ms[0].Spec.Stopped, nil
	})
	env.crash()
	t.Logf("killed lotse while the machine stops")
	if err := env.start(); err != nil {
		t.Fatal(err)
	}
	mc = mgmtClient(t)
	waitFor(t, 3*time.Minute, name+" Hibernated after the restart", func() (bool, error) {
		got := getCluster(t, mc, name)
		return got.Status.Phase == lotsev1.PhaseHibernated, nil
	})
	if left := clusterProcesses(name); len(left) > 0 {
		t.Errorf("processes of the hibernated cluster still run: %+v", left)
	}

	mustCLI(t, "cluster", "wake", name)
	waitFor(t, 2*time.Minute, "the control plane starting", func() (bool, error) {
		return len(clusterProcesses(name)) > 0, nil
	})
	env.crash()
	t.Logf("killed lotse while the cluster wakes")
	if err := env.start(); err != nil {
		t.Fatal(err)
	}
	mc = mgmtClient(t)
	got := waitClusterReady(t, mc, name, 5*time.Minute)
	if got.Status.Hibernation != nil && got.Status.Hibernation.Since != nil {
		t.Errorf("status.hibernation after waking: %+v", got.Status.Hibernation)
	}
	ms := listMachines(t, mc, name)
	if len(ms) != 1 || ms[0].Spec.Stopped || ms[0].Annotations["lotse.dev/hibernated"] != "" {
		t.Errorf("machines after waking: %v", machineSummary(ms))
	}
	nodes, err := tenantClient(t, name).CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 || nodes.Items[0].Spec.Unschedulable {
		t.Errorf("nodes after waking: %d, %v", len(nodes.Items), err)
	}
}

// TestRestartDuringRestore: killing lotse just after an on-demand backup
// is asked for, and while a restore runs (control plane being stopped,
// the data swapped or starting), and starting lotse again ends with the
// snapshot taken and the cluster restored: the snapshot's objects, none
// written after it, one process per component.
func TestRestartDuringRestore(t *testing.T) {
	const name = "restart-restore"
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Backup = &lotsev1.BackupSpec{}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, name)
	waitClusterReady(t, mc, name, 10*time.Minute)
	cs := tenantClient(t, name)
	configMap := func(key string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: key, Namespace: "default"}}
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, configMap("in-snapshot"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	annotate := func(key, value string) { annotateCluster(t, mc, name, key, value) }
	annotate(lotsev1.OperationAnnotation, lotsev1.OperationBackup)
	env.crash()
	t.Log("killed lotse right after the backup was asked for")
	if err := env.start(); err != nil {
		t.Fatal(err)
	}
	mc = mgmtClient(t)
	var snap string
	waitFor(t, 3*time.Minute, "the snapshot after the restart", func() (bool, error) {
		got := getCluster(t, mc, name)
		_, pending := got.Annotations[lotsev1.OperationAnnotation]
		if b := got.Status.Backup; !pending && b != nil && b.LastSnapshot != "" {
			snap = b.LastSnapshot
			return true, nil
		}
		return false, nil
	})
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, configMap("after-snapshot"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	annotate(lotsev1.RestoreAnnotation, snap)
	waitFor(t, time.Minute, "the restore to start", func() (bool, error) {
		return getCluster(t, mc, name).Status.Phase == lotsev1.PhaseRestoring, nil
	})
	env.crash()
	t.Log("killed lotse during the restore")
	if err := env.start(); err != nil {
		t.Fatal(err)
	}
	mc = mgmtClient(t)
	waitFor(t, 3*time.Minute, "the restore to finish after the restart", func() (bool, error) {
		got := getCluster(t, mc, name)
		rs := got.Status.Restore
		_, pending := got.Annotations[lotsev1.RestoreAnnotation]
		return !pending && rs != nil && rs.Step == lotsev1.RestoreStepSucceeded, nil
	})
	waitClusterReady(t, mc, name, 3*time.Minute)
	cs = tenantClient(t, name)
	waitFor(t, time.Minute, "the restored objects", func() (bool, error) {
		if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "in-snapshot", metav1.GetOptions{}); err != nil {
			return false, err
		}
		_, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "after-snapshot", metav1.GetOptions{})
		if err == nil {
			return false, fmt.Errorf("after-snapshot is still there")
		}
		return apierrors.IsNotFound(err), err
	})
	seen := map[string]int{}
	for _, p := range clusterProcesses(name) {
		seen[componentOf(p.Name)]++
	}
	for comp, n := range seen {
		if n != 1 {
			t.Errorf("%s: %d processes after the restore, want 1", comp, n)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(clusterDir(name), "data")); len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("data directories after the restore: %v, want only etcd-0", names)
	}
}

// TestRestartDuringRotation: killing lotse while phase 1 of every
// rotation runs (a step of the CA, service-account key and etcd key under
// way) and while phase 2 runs, and starting it again ends with every
// rotation Completed: the node Ready on its new certificates, the new
// kubeconfig working and the old one refused, Secrets under the new key.
func TestRestartDuringRotation(t *testing.T) {
	const name = "restart-rotate"
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, name)
	waitClusterReady(t, mc, name, 15*time.Minute)
	oldCfg := tenantConfig(t, name)
	if _, err := kubernetes.NewForConfigOrDie(oldCfg).CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "precious"},
		StringData: map[string]string{"v": "kept"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	phaseOf := func(got *lotsev1.Cluster) map[string]string {
		out := map[string]string{}
		if got.Status.Credentials == nil {
			return out
		}
		r := got.Status.Credentials.Rotation
		for kind, rs := range map[string]*lotsev1.RotationStatus{"ca": r.CertificateAuthorities, "sa": r.ServiceAccountKey, "etcd": r.EtcdEncryptionKey} {
			if rs != nil {
				out[kind] = rs.Phase + "/" + rs.Step
			}
		}
		return out
	}
	crashWhen := func(what string, running func(map[string]string) bool) {
		t.Helper()
		var seen map[string]string
		waitFor(t, 3*time.Minute, what, func() (bool, error) {
			seen = phaseOf(getCluster(t, mc, name))
			return running(seen), nil
		})
		env.crash()
		t.Logf("killed lotse while %s (%v)", what, seen)
		if err := env.start(); err != nil {
			t.Fatal(err)
		}
		mc = mgmtClient(t)
	}
	waitAll := func(phase string) {
		t.Helper()
		waitFor(t, 6*time.Minute, "every rotation "+phase, func() (bool, error) {
			p := phaseOf(getCluster(t, mc, name))
			return len(p) == 3 && p["ca"] == phase+"/" && p["sa"] == phase+"/" && p["etcd"] == phase+"/", nil
		})
	}

	mustCLI(t, "cluster", "rotate", name, "all", "--no-wait")
	crashWhen("the CA's new certificates are issued", func(p map[string]string) bool { return p["ca"] == "Preparing/reissue" })
	waitAll(lotsev1.RotationPrepared)
	if err := answersWith(ctx, oldCfg); err != nil {
		t.Errorf("phase 1: the kubeconfig from before fails: %v", err)
	}

	mustCLI(t, "cluster", "rotate", name, "all", "--complete", "--no-wait")
	crashWhen("phase 2 runs", func(p map[string]string) bool { return strings.HasPrefix(p["ca"], "Completing") })
	waitAll(lotsev1.RotationCompleted)
	completed := time.Now()
	if err := answersWith(ctx, oldCfg); err == nil {
		t.Error("phase 2: the kubeconfig from before still works")
	}
	cs := tenantClient(t, name)
	s, err := cs.CoreV1().Secrets("default").Get(ctx, "precious", metav1.GetOptions{})
	if err != nil || string(s.Data["v"]) != "kept" {
		t.Errorf("the secret after the rotations: %v %q", err, s.Data["v"])
	}
	waitFor(t, 3*time.Minute, "the node's lease renewed after phase 2", func() (bool, error) {
		lease, err := cs.CoordinationV1().Leases("kube-node-lease").Get(ctx, listMachines(t, mc, name)[0].Name, metav1.GetOptions{})
		return err == nil && lease.Spec.RenewTime != nil && lease.Spec.RenewTime.After(completed), nil
	})
	waitClusterReady(t, mc, name, 5*time.Minute)
}

// answersWith says whether a client with cfg gets an answer from the API.
func answersWith(ctx context.Context, cfg *rest.Config) error {
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = 10 * time.Second
	_, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
	return err
}
