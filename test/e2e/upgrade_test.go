package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/releases"
)

// upgradeFrom is the release an upgrade test starts from: the newest
// patch of the minor before the default (CI builds both).
func upgradeFrom(t testing.TB) string {
	t.Helper()
	def, _ := releases.ParseVersion(releases.Default().Version)
	r, ok := releases.LatestPatch(fmt.Sprintf("1.%d.0", def.Minor-1))
	if !ok {
		t.Fatalf("the catalog has no release of 1.%d", def.Minor-1)
	}
	return r.Version
}

// apiLoad runs a steady client load against a cluster, as its tenants
// would: reads, writes and a watch, through client-go (which retries what
// a server asks it to retry, e.g. 429 with Retry-After, like every client).
// Every error client-go hands back counts as a failed request, with one
// exception, counted apart and bounded: a write that reaches etcd in the
// few milliseconds its leadership moves (a rolling update replaces the
// leader last, so once per roll) is dropped by etcd, and kube-apiserver
// passes that on instead of retrying it (kubernetes/kubernetes#112152).
type apiLoad struct {
	ok, failed atomic.Int64
	firstFail  atomic.Value
	// leaderMoves are writes etcd dropped during a leadership transfer.
	leaderMoves atomic.Int64
	// leaderChanges is how many times etcd's leadership moved while the
	// load ran, if the test counted them (else one is assumed).
	leaderChanges int64
	firstMove     atomic.Value
	watched       atomic.Int64 // events the watch delivered
	stop          context.CancelFunc
	wg            sync.WaitGroup
	start         time.Time
}

func startAPILoad(t testing.TB, cluster, namespace string) *apiLoad {
	t.Helper()
	cfg := tenantConfig(t, cluster)
	cfg.QPS, cfg.Burst = 500, 500 // the load, not client-go's limiter, sets the pace
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	l := &apiLoad{stop: cancel, start: time.Now()}
	fail := func(what string, err error) {
		l.failed.Add(1)
		l.firstFail.CompareAndSwap(nil, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), what, err))
	}
	// Writers: create, update and delete ConfigMaps.
	for w := range writersPerLoad {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("load-%d-%d", w, i%20)
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Data: map[string]string{"i": fmt.Sprint(i)}}
				_, err := cs.CoreV1().ConfigMaps(namespace).Create(ctx, cm, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					_, err = cs.CoreV1().ConfigMaps(namespace).Update(ctx, cm, metav1.UpdateOptions{})
				}
				if err != nil && ctx.Err() == nil && etcdLeaderTransfer(err) {
					l.leaderMoves.Add(1)
					l.firstMove.CompareAndSwap(nil, fmt.Sprintf("%s write: %v", time.Now().Format("15:04:05.000"), err))
				} else if err != nil && ctx.Err() == nil && !apierrors.IsConflict(err) {
					fail("write", err)
				} else if err == nil {
					l.ok.Add(1)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	// Readers: get and list.
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for ctx.Err() == nil {
			if _, err := cs.CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{}); err != nil && ctx.Err() == nil {
				fail("list", err)
			} else if err == nil {
				l.ok.Add(1)
			}
			if _, err := cs.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{}); err != nil && ctx.Err() == nil {
				fail("get", err)
			} else if err == nil {
				l.ok.Add(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	// A watch, re-established from its last resourceVersion when the
	// server ends it (as informers do): that is not a failure; an error
	// starting it is.
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		rv := ""
		for ctx.Err() == nil {
			w, err := cs.CoreV1().ConfigMaps(namespace).Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
			if err != nil {
				if ctx.Err() == nil {
					fail("watch", err)
				}
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					rv = "" // too old: start from now, as a relist would
					break
				}
				if m, err := metaAccessor(ev.Object); err == nil {
					rv = m
				}
				l.watched.Add(1)
			}
			w.Stop()
		}
	}()
	return l
}

// writersPerLoad is how many goroutines of an apiLoad write.
const writersPerLoad = 2

// etcdLeaderTransfer says whether err is etcd dropping a write while its
// leadership moves: the leader drops it at once ("raft proposal dropped"),
// a follower that forwarded it to the leader gives up after its request
// timeout.
func etcdLeaderTransfer(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "raft proposal dropped") || strings.Contains(msg, "etcdserver: leader changed") ||
		strings.Contains(msg, "etcdserver: request timed out")
}

func metaAccessor(o any) (string, error) {
	if obj, ok := o.(metav1.Object); ok {
		return obj.GetResourceVersion(), nil
	}
	return "", fmt.Errorf("%T has no metadata", o)
}

func (l *apiLoad) finish(t testing.TB) {
	t.Helper()
	l.stop()
	l.wg.Wait()
	t.Logf("client load: %d requests ok (%.0f/s), %d failed, %d watch events", l.ok.Load(),
		float64(l.ok.Load())/time.Since(l.start).Seconds(), l.failed.Load(), l.watched.Load())
	if l.ok.Load() < 100 || l.watched.Load() < 10 {
		t.Errorf("the load hardly ran (%d requests, %d watch events)", l.ok.Load(), l.watched.Load())
	}
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d client requests failed; first: %v", n, l.firstFail.Load())
	}
	// Each writer can have at most one write in the window of each
	// leadership change: one per roll (the leader is replaced last),
	// plus any election a starved member forced.
	changes := max(l.leaderChanges, 1)
	if n := l.leaderMoves.Load(); n > writersPerLoad*changes {
		t.Errorf("%d writes were dropped by etcd leadership transfers, more than %d writers in %d leadership changes may meet; first: %v",
			n, writersPerLoad, changes, l.firstMove.Load())
	} else if n > 0 {
		t.Logf("%d writes met an etcd leadership transfer: %v", n, l.firstMove.Load())
	}
}

// TestUpgrade: an HA cluster with a pool of two nodes, a pool of one
// updated in place, a workload with a PodDisruptionBudget and a steady
// client load is upgraded one minor: etcd, API servers, controller-managers
// and schedulers roll one instance at a time, then the first pool rolls
// with maxSurge 1 / maxUnavailable 0 and the second swaps its kubelet in
// place. No client request fails, the rolling pool never has fewer Ready
// nodes than desired, the in-place machine keeps its node-local data, and
// at the end every process and node runs the new version.
func TestUpgrade(t *testing.T) {
	const name = "upgrade"
	parallel(t)
	from, to := upgradeFrom(t), releases.Default().Version
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Kubernetes.Version = from
	c.Spec.ControlPlane.HighAvailability = true
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 2, Maximum: 2, MaxSurge: 1, MaxUnavailable: 0},
		{Name: "keep", Minimum: 1, Maximum: 1, MaxSurge: 1, UpdateStrategy: lotsev1.UpdateInPlace}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, name)
	waitClusterReady(t, mc, name, 20*time.Minute)
	cs := tenantClient(t, name)

	// The in-place pool's machine keeps its node-local data.
	var kept lotsev1.Machine
	for _, m := range listMachines(t, mc, name) {
		if m.Spec.Pool == "keep" {
			kept = m
		}
	}
	marker := filepath.Join(kept.Status.LocalVolumesPath, "kept-by-in-place-update")
	if err := os.MkdirAll(kept.Status.LocalVolumesPath, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(marker, []byte("yes"), 0o644); err != nil {
		t.Fatal(err)
	}

	// A workload that must keep running, guarded by a budget.
	deployEchoApp(t, cs, "default", "web")
	if _, err := cs.AppsV1().Deployments("default").Patch(ctx, "web", "application/merge-patch+json",
		[]byte(`{"spec":{"replicas":2}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
	if _, err := cs.PolicyV1().PodDisruptionBudgets("default").Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "web has 2 available replicas", func() (bool, error) {
		d, err := cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == 2, err
	})

	// Watch the pool's Ready nodes the whole time.
	var minReady atomic.Int64
	minReady.Store(99)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampling sync.WaitGroup
	sampling.Add(1)
	var sawProgress atomic.Value
	go func() {
		defer sampling.Done()
		for sampleCtx.Err() == nil {
			if nodes, err := cs.CoreV1().Nodes().List(sampleCtx, metav1.ListOptions{LabelSelector: lotsev1.LabelPool + "=w"}); err == nil {
				ready := int64(0)
				for i := range nodes.Items {
					if n := &nodes.Items[i]; nodeReady(n) && !n.Spec.Unschedulable {
						ready++
					}
				}
				if ready < minReady.Load() {
					minReady.Store(ready)
				}
			}
			cl := &lotsev1.Cluster{}
			if err := mc.Get(sampleCtx, client.ObjectKey{Namespace: "default", Name: name}, cl); err == nil && cl.Status.Upgrade != nil {
				for _, comp := range cl.Status.Upgrade.Components {
					if comp.Updated > 0 && comp.Updated < comp.Total {
						sawProgress.CompareAndSwap(nil, fmt.Sprintf("%s %d/%d", comp.Name, comp.Updated, comp.Total))
					}
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
	}()

	termBefore := etcdTerm(t, name)
	load := startAPILoad(t, name, "default")
	start := time.Now()
	updateCluster(t, mc, name, func(c *lotsev1.Cluster) { c.Spec.Kubernetes.Version = to })
	var cl *lotsev1.Cluster
	waitFor(t, 25*time.Minute, name+" upgraded to "+to, func() (bool, error) {
		cl = getCluster(t, mc, name)
		return cl.Status.KubernetesVersion == to && cl.Status.Upgrade == nil &&
			cl.Status.ObservedGeneration == cl.Generation && cl.Status.Phase == lotsev1.PhaseRunning, fmt.Errorf("%s", describeOp(cl))
	})
	took := time.Since(start)
	time.Sleep(2 * time.Second) // the load goes on a little after the end
	load.leaderChanges = int64(etcdTerm(t, name) - termBefore)
	t.Logf("etcd's leadership changed %d times during the upgrade", load.leaderChanges)
	load.finish(t)
	stopSampling()
	sampling.Wait()
	t.Logf("upgrade %s -> %s of an HA cluster with 3 nodes (2 replaced, 1 in place) took %s", from, to, took.Round(time.Second))

	if m := minReady.Load(); m < 2 {
		t.Errorf("the pool had %d schedulable Ready nodes at one point, fewer than the 2 desired (maxUnavailable 0)", m)
	}
	if sawProgress.Load() == nil {
		t.Error("status.upgrade never showed a component part-way updated")
	}
	waitClusterEvent(t, name, "UpgradeStarted", "from "+from+" to "+to)
	waitClusterEvent(t, name, "Upgraded", to)

	// Every control-plane process runs the new binaries, the cloud
	// controller managers too (built with the new release).
	etcd := releases.Default().Etcd
	ccms := 0
	for _, p := range clusterProcesses(name) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
		if err != nil {
			continue // exited since the scan
		}
		comp := componentOf(p.Name)
		switch comp {
		case "etcd":
			if !strings.Contains(exe, "/etcd/"+etcd+"/") {
				t.Errorf("%s runs %s, want etcd %s", p.Name, exe, etcd)
			}
		case "kube-apiserver", "kube-controller-manager", "kube-scheduler":
			if !strings.Contains(exe, "/kubernetes/"+to+"/") {
				t.Errorf("%s runs %s, want kubernetes %s", p.Name, exe, to)
			}
		case "cloud-controller-manager":
			ccms++
			if !strings.Contains(exe, "/cloud-controller-manager/"+to+"-") {
				t.Errorf("%s runs %s, want the cloud controller manager of %s", p.Name, exe, to)
			}
		}
	}
	if ccms != 2 {
		t.Errorf("%d cloud controller manager processes, want 2 (one beside each controller-manager)", ccms)
	}
	info, err := cs.Discovery().ServerVersion()
	if err != nil || info.GitVersion != "v"+to {
		t.Errorf("server version %v (%v), want v%s", info, err, to)
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 3 {
		t.Errorf("%d nodes after the roll, want 3", len(nodes.Items))
	}
	for _, n := range nodes.Items {
		if n.Status.NodeInfo.KubeletVersion != "v"+to || !nodeReady(&n) || n.Spec.Unschedulable {
			t.Errorf("node %s: kubelet %s, ready %v, unschedulable %v; want v%s, Ready and schedulable", n.Name,
				n.Status.NodeInfo.KubeletVersion, nodeReady(&n), n.Spec.Unschedulable, to)
		}
	}
	sawKept := false
	for _, m := range listMachines(t, mc, name) {
		if m.Spec.Version != to {
			t.Errorf("machine %s at %s", m.Name, m.Spec.Version)
		}
		sawKept = sawKept || m.UID == kept.UID
	}
	if !sawKept {
		t.Errorf("the in-place pool's machine %s was replaced", kept.Name)
	}
	if data, err := os.ReadFile(marker); err != nil || string(data) != "yes" {
		t.Errorf("node-local data of %s after the in-place update: %q, %v", kept.Name, data, err)
	}
	waitClusterEvent(t, name, "MachineUpdating", kept.Name+" in place from "+from)
	d, err := cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || d.Status.AvailableReplicas != 2 {
		t.Errorf("web after the upgrade: %v available (%v), want 2", d.Status.AvailableReplicas, err)
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// etcdTerm is the highest raft term a cluster's etcd members report: it
// grows by one with every election.
func etcdTerm(t testing.TB, name string) uint64 {
	t.Helper()
	ec := etcdClient(t, name)
	defer ec.Close()
	var term uint64
	for _, ep := range ec.Endpoints() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := ec.Status(ctx, ep)
		cancel()
		if err != nil {
			continue // a member restarting; the others know the term
		}
		term = max(term, st.RaftTerm)
	}
	if term == 0 {
		t.Fatalf("no etcd member of %s reports its raft term", name)
	}
	return term
}
