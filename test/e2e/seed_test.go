package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane/seed"
	"github.com/lotse/lotse/internal/drain"
)

// TestSeed: a Lotse cluster with nodes serves as a seed. A second
// cluster's highly available control plane runs there as pods (three etcd
// members on volumes, two API servers with their tunnel servers,
// controller-manager and scheduler), gets
// worker nodes from the local provider, and its webhooks, logs, exec and
// port-forward work through the tunnel; an API server pod deleted, or a
// seed node drained (seedDrain), fails no request. The host runs no control-plane
// process of it, only the forwarders in front of the seed. A cluster
// whose selector matches no seed waits with a condition that says so; the
// seed cannot go while it hosts a control plane, and goes once the
// cluster is deleted, its namespace with it. The Helm chart installed into
// the seed's cluster starts managers there that run a cluster of their
// own on it (helmManager).
func TestSeed(t *testing.T) {
	parallel(t)
	buildEchoImage(t)
	prebuildHelm()
	mc := mgmtClient(t)
	ctx := context.Background()
	const host, hosted, homeless = "seed-host", "seeded", "seedless"

	seedCluster := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: host, Namespace: "default"}}
	seedCluster.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 2, Maximum: 2, MaxSurge: 1}}
	if err := mc.Create(ctx, seedCluster); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", host, "--wait", "--timeout", "5m") })

	// A cluster asking for a seed that does not exist waits, saying why.
	nowhere := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: homeless, Namespace: "default"}}
	nowhere.Spec.ControlPlane.SeedSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "gold"}}
	if err := mc.Create(ctx, nowhere); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", homeless, "--wait", "--timeout", "2m") })

	waitClusterReady(t, mc, host, 15*time.Minute)
	mustCLI(t, "seed", "add", "local", "--cluster", host, "--label", "tier=silver")
	t.Cleanup(func() {
		_ = mc.Delete(context.Background(), &lotsev1.Seed{ObjectMeta: metav1.ObjectMeta{Name: "local"}})
	})
	waitFor(t, 2*time.Minute, "seed local Ready", func() (bool, error) {
		got := &lotsev1.Seed{}
		if err := mc.Get(ctx, client.ObjectKey{Name: "local"}, got); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(got.Status.Conditions, lotsev1.ConditionSeedReady) && got.Status.ReadyNodes == 2, nil
	})

	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: hosted, Namespace: "default"}}
	c.Spec.ControlPlane.SeedSelector = silver()
	// One hosted cluster serves every case below, which keeps the test's
	// load on the CI machine to the seed and one control plane. It starts
	// with one replica and is made highly available on the way.
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", hosted, "--wait", "--timeout", "5m") })

	t.Run("no matching seed: pending with a condition", func(t *testing.T) {
		waitFor(t, time.Minute, "SeedScheduled=False on "+homeless, func() (bool, error) {
			cl := getCluster(t, mc, homeless)
			cond := meta.FindStatusCondition(cl.Status.Conditions, lotsev1.ConditionSeedScheduled)
			return cond != nil && cond.Status == metav1.ConditionFalse && strings.Contains(cond.Message, "tier=gold") &&
				cl.Status.Phase == lotsev1.PhasePending && cl.Status.Seed == "", nil
		})
	})

	cl := waitClusterReady(t, mc, hosted, 15*time.Minute)
	if cl.Status.Seed != "local" {
		t.Fatalf("status.seed = %q, want local", cl.Status.Seed)
	}

	t.Run("control plane runs as pods in the seed", func(t *testing.T) {
		seedCS := clusterClientset(t, host)
		ns := seedNamespace(t, hosted)
		pods, err := seedCS.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		running := map[string]bool{}
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running[p.Labels[seed.LabelComponent]] = true
			}
		}
		for _, want := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
			if !running[want] {
				t.Errorf("no running %s pod in the seed's namespace %s (pods: %d)", want, ns, len(pods.Items))
			}
		}
		pvcs, err := seedCS.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(pvcs.Items) != 1 {
			t.Fatalf("etcd's volume claims: %v %+v", err, pvcs)
		}
		for _, pvc := range pvcs.Items {
			if pvc.Status.Phase != corev1.ClaimBound {
				t.Errorf("volume claim %s is %s, want Bound", pvc.Name, pvc.Status.Phase)
			}
		}
		// The host runs only the forwarders of this control plane.
		for _, p := range clusterProcesses(hosted) {
			if !strings.Contains(p.Name, "/seed-") && !strings.Contains(p.Name, "/machines/") {
				t.Errorf("process %s runs on the host for a control plane on a seed", p.Name)
			}
		}
	})

	t.Run("the API behind the seed's load balancer", func(t *testing.T) {
		svc, err := clusterClientset(t, host).CoreV1().Services(seedNamespace(t, hosted)).Get(ctx, "kube-apiserver", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Status.LoadBalancer.Ingress) == 0 {
			t.Fatalf("the API's Service is %s with ingress %+v, want a LoadBalancer with an address", svc.Spec.Type, svc.Status.LoadBalancer.Ingress)
		}
		want := "https://" + svc.Status.LoadBalancer.Ingress[0].IP + ":6443"
		if cl.Status.Endpoint != want {
			t.Fatalf("status.endpoint = %s, want the load balancer's %s", cl.Status.Endpoint, want)
		}
		// The admin kubeconfig names it, the API server's certificate
		// carries it, and nothing on the host forwards to it.
		cs := clusterClientset(t, hosted)
		if _, err := cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
			t.Fatalf("the API through %s: %v", want, err)
		}
		for _, p := range clusterProcesses(hosted) {
			if strings.HasSuffix(p.Name, "/seed-endpoint-0") {
				t.Errorf("process %s forwards to a control plane that has a load balancer", p.Name)
			}
		}
	})

	t.Run("webhooks logs exec port-forward through the tunnel", func(t *testing.T) {
		tc := newTunnelCluster(t, hosted)
		t.Run("admission webhooks", tc.admissionWebhooks)
		t.Run("logs exec port-forward", tc.logsExecPortForward)
	})

	t.Run("made highly available: etcd grows to three members", func(t *testing.T) {
		seedGrow(t, host, hosted)
	})

	t.Run("backup and restore through the seed", func(t *testing.T) {
		cs := tenantClient(t, hosted)
		put := func(name string) {
			t.Helper()
			m := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Data: map[string]string{"v": name}}
			if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, m, metav1.CreateOptions{}); err != nil {
				t.Fatalf("write configmap %s: %v", name, err)
			}
		}
		put("before-backup")
		out := mustCLI(t, "cluster", "backup", hosted)
		m := snapshotLine.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no snapshot name in %q", out)
		}
		matches, _ := filepath.Glob(filepath.Join(env.stateDir, "backups", "default", hosted, m[1]+"*"))
		if len(matches) == 0 {
			t.Fatalf("snapshot %s not in the backup directory", m[1])
		}
		put("after-backup")
		before := getCluster(t, mc, hosted).Status.Restore
		out = mustCLI(t, "cluster", "restore", hosted, "--from", m[1])
		t.Log(strings.TrimSpace(out))
		// Evidence of this restore: its status, newer than any before.
		waitFor(t, 10*time.Minute, "restore of "+m[1]+" succeeded", func() (bool, error) {
			rs := getCluster(t, mc, hosted).Status.Restore
			if rs != nil && rs.Step == lotsev1.RestoreStepFailed {
				t.Fatalf("restore failed: %s", rs.Message)
			}
			return rs != nil && rs.Step == lotsev1.RestoreStepSucceeded && strings.HasSuffix(rs.From, "/"+m[1]) &&
				(before == nil || before.StartTime == nil || rs.StartTime.After(before.StartTime.Time)), nil
		})
		waitClusterReady(t, mc, hosted, 5*time.Minute)
		cs = tenantClient(t, hosted)
		waitFor(t, 2*time.Minute, "the restored data", func() (bool, error) {
			if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "before-backup", metav1.GetOptions{}); err != nil {
				return false, err
			}
			_, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "after-backup", metav1.GetOptions{})
			if err == nil {
				return false, fmt.Errorf("configmap after-backup, written after the snapshot, is still there")
			}
			return apierrors.IsNotFound(err), nil
		})
		// Every member runs on the restored data, and the helpers are gone.
		seedCS := clusterClientset(t, host)
		ns := seedNamespace(t, hosted)
		waitFor(t, 2*time.Minute, "3 etcd members ready, no restore pods", func() (bool, error) {
			pods, err := seedCS.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err
			}
			ready := 0
			for _, p := range pods.Items {
				switch p.Labels[seed.LabelComponent] {
				case "etcd-data-swap":
					return false, nil
				case "etcd":
					if podReady(&p) {
						ready++
					}
				}
			}
			return ready == 3, nil
		})
		put("after-restore")
	})

	t.Run("seed status counts the control plane", func(t *testing.T) {
		waitFor(t, time.Minute, "seed local hosting 1", func() (bool, error) {
			got := &lotsev1.Seed{}
			err := mc.Get(ctx, client.ObjectKey{Name: "local"}, got)
			return err == nil && got.Status.ControlPlanes == 1, err
		})
		if out := mustCLI(t, "seed", "list"); !strings.Contains(out, "1/20") || !strings.Contains(out, "True") {
			t.Errorf("lotse seed list:\n%s", out)
		}
	})

	t.Run("HA: a deleted API server pod fails no request", func(t *testing.T) {
		seedHA(t, host, cl)
	})

	t.Run("HA: a seed node drained fails no request, etcd's data stays", func(t *testing.T) {
		seedDrain(t, host, cl)
	})

	t.Run("helm: a manager installed in the seed runs a cluster's control plane there", func(t *testing.T) {
		helmManager(t, host)
	})

	t.Run("a seed hosting a control plane stays until it is gone", func(t *testing.T) {
		ns := seedNamespace(t, hosted)
		if err := mc.Delete(ctx, &lotsev1.Seed{ObjectMeta: metav1.ObjectMeta{Name: "local"}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "DeletionBlocked on seed local", func() (bool, error) {
			got := &lotsev1.Seed{}
			if err := mc.Get(ctx, client.ObjectKey{Name: "local"}, got); err != nil {
				return false, err
			}
			cond := meta.FindStatusCondition(got.Status.Conditions, lotsev1.ConditionSeedDeletionBlocked)
			return cond != nil && cond.Status == metav1.ConditionTrue && strings.Contains(cond.Message, "default/"+hosted), nil
		})
		// The seed's own cluster waits for the control planes on it too.
		seedCS := clusterClientset(t, host)
		if err := mc.Delete(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: host}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, host+" waiting for the control planes on it", func() (bool, error) {
			cl := getCluster(t, mc, host)
			op := cl.Status.LastOperation
			return op != nil && strings.Contains(op.Description, "the cluster is seed local, which hosts the control planes of default/"+hosted), nil
		})
		if n := len(getCluster(t, mc, host).Finalizers); n == 0 {
			t.Fatal("the seed's cluster lost its finalizer while it hosts a control plane")
		}
		mustCLI(t, "cluster", "delete", hosted, "--wait", "--timeout", "5m")
		waitFor(t, 3*time.Minute, "the control plane's namespace gone from the seed", func() (bool, error) {
			_, err := seedCS.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			return apierrors.IsNotFound(err), err
		})
		waitFor(t, time.Minute, "seed local gone", func() (bool, error) {
			err := mc.Get(ctx, client.ObjectKey{Name: "local"}, &lotsev1.Seed{})
			return apierrors.IsNotFound(err), err
		})
		if procs := clusterProcesses(hosted); len(procs) != 0 {
			t.Errorf("processes left behind: %v", procs)
		}
		waitFor(t, 5*time.Minute, "the seed's cluster deleted after its seed", func() (bool, error) {
			err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: host}, &lotsev1.Cluster{})
			return apierrors.IsNotFound(err), err
		})
	})
}

// seedGrow makes a single-replica control plane on a seed highly
// available: etcd grows to three members keeping its data, two API
// servers serve, and the endpoint stays.
func seedGrow(t *testing.T, host, name string) {
	ctx := context.Background()
	mc := mgmtClient(t)
	cs := tenantClient(t, name)
	before := getCluster(t, mc, name)
	const n = 10
	for i := range n {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("before-growing-%d", i), Namespace: "default"}}
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	updateCluster(t, mc, name, func(c *lotsev1.Cluster) { c.Spec.ControlPlane.HighAvailability = true })
	waitFor(t, 10*time.Minute, name+" highly available and Ready", func() (bool, error) {
		c := getCluster(t, mc, name)
		return c.Status.ObservedGeneration == c.Generation && c.Status.Phase == lotsev1.PhaseRunning, fmt.Errorf("%s", describeOp(c))
	})
	if after := getCluster(t, mc, name); after.Status.Endpoint != before.Status.Endpoint {
		t.Errorf("endpoint moved from %s to %s", before.Status.Endpoint, after.Status.Endpoint)
	}
	seedCS := clusterClientset(t, host)
	ns := seedNamespace(t, name)
	waitFor(t, 3*time.Minute, "3 etcd members and 2 API servers ready on the seed", func() (bool, error) {
		pods, err := seedCS.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		ready := map[string]int{}
		for _, p := range pods.Items {
			if podReady(&p) {
				ready[p.Labels[seed.LabelComponent]]++
			}
		}
		return ready["etcd"] == 3 && ready["kube-apiserver"] == 2, fmt.Errorf("ready: %v", ready)
	})
	checkConfigMapsKept(t, cs, "default", "before-growing-%d", n)
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-growing", Namespace: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Errorf("a write after growing: %v", err)
	}
}

// clusterClientset is a client of a Lotse cluster, from its kubeconfig.
func clusterClientset(t testing.TB, name string) kubernetes.Interface {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	mustCLI(t, "cluster", "kubeconfig", name, "--output-file", kubeconfig)
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return kubernetes.NewForConfigOrDie(cfg)
}

// seedNamespace reads a seed-hosted control plane's namespace from its
// layout on the host.
func seedNamespace(t testing.TB, name string) string {
	t.Helper()
	b := &seed.Backend{StateDir: env.stateDir}
	l, err := b.LoadLayout("clusters/default/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Namespace
}

// seedHA deletes one of the API server pods of a highly available cluster
// on the seed (as `kubectl delete pod` does) while a client sends requests
// through the cluster's endpoint, each on a new connection: none fails (a
// request cut off in flight is retried once, as kubectl does).
func seedHA(t *testing.T, host string, cl *lotsev1.Cluster) {
	ctx := context.Background()
	name := cl.Name
	seedCS := clusterClientset(t, host)
	ns := seedNamespace(t, name)
	apiPods := func() []corev1.Pod {
		pods, err := seedCS.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: seed.LabelComponent + "=kube-apiserver"})
		if err != nil {
			t.Fatal(err)
		}
		return pods.Items
	}
	if pods := apiPods(); len(pods) != 2 {
		t.Fatalf("%d API server pods, want 2", len(pods))
	}

	probe := startAPIProbe(t, adminHTTPClient(t, name), cl.Status.Endpoint)
	victim := apiPods()[0]
	if err := seedCS.CoreV1().Pods(ns).Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Evidence newer than the fault: a pod other than the victim, ready,
	// and the victim gone.
	waitFor(t, 5*time.Minute, "a replacement API server pod Ready and the deleted one gone", func() (bool, error) {
		ready := 0
		var state []string
		for _, p := range apiPods() {
			if p.Name == victim.Name {
				return false, fmt.Errorf("%s still there (%s)", p.Name, p.Status.Phase)
			}
			isReady := podReady(&p)
			if isReady {
				ready++
			}
			state = append(state, describePod(p, isReady))
		}
		return ready == 2, fmt.Errorf("%d ready: %s", ready, strings.Join(state, "; "))
	})
	time.Sleep(2 * time.Second)
	probe.stop(t, "an API server pod was replaced")
}

// apiProbe reads a namespace from a cluster's API every 50ms, each
// request on a new connection as independent clients would, and counts the
// reads that failed as a client-go client (kubectl, every controller) sees
// them: client-go retries a GET that lost its connection (reset, EOF) and a
// request answered with Retry-After (an API server that shuts down says
// so), up to 10 times, a second apart. Beyond that, a try that timed out
// (the http.Client's limit, as a client with a deadline has) or failed
// otherwise is retried once at once. The log says how many reads needed a
// retry, how many followed a timeout, and the slowest try that answered.
type apiProbe struct {
	ok, failed, retried, timedOut atomic.Int64
	slowest                       atomic.Int64 // nanoseconds of the slowest try that answered
	firstTimeout                  atomic.Value
	mu                            sync.Mutex
	failures                      []string    // the first few, with every try's error
	stopping                      atomic.Bool // no new reads; the one under way ends as it would
	// beforeFailure, when set, logs what a failure happened beside; it
	// runs before the failure is reported, so that the report is the
	// test's last line (what a log cut to its tail shows).
	beforeFailure func()
	cancel        context.CancelFunc
	done          sync.WaitGroup
}

// retryAfterError is an answer that asks the client to come back.
type retryAfterError struct {
	status, seconds int
}

func (e retryAfterError) Error() string {
	return fmt.Sprintf("status %d, Retry-After %d", e.status, e.seconds)
}

// clientGoRetries is how often client-go tries a GET again (rest.Request's
// default maxRetries); it waits a second when the server named no time.
const clientGoRetries = 10

func startAPIProbe(t *testing.T, httpc *http.Client, endpoint string) *apiProbe {
	return startAPIProbeWaiting(t, httpc, endpoint, time.Second)
}

// startAPIProbeWaiting is startAPIProbe with another wait before a retry
// (and in place of Retry-After's seconds), for the probe's own test.
func startAPIProbeWaiting(t *testing.T, httpc *http.Client, endpoint string, retryWait time.Duration) *apiProbe {
	p := &apiProbe{}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	t.Cleanup(func() { cancel(); p.done.Wait() }) // a test that fails before stop
	get := func() error {
		began := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/api/v1/namespaces/default", nil)
		if err != nil {
			return err
		}
		resp, err := httpc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			// As client-go reads Retry-After: whole seconds, on 429 and 5xx.
			seconds, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err == nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500) {
				return retryAfterError{status: resp.StatusCode, seconds: max(seconds, 1)}
			}
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		took := int64(time.Since(began))
		for prev := p.slowest.Load(); took > prev && !p.slowest.CompareAndSwap(prev, took); prev = p.slowest.Load() {
		}
		return nil
	}
	// read is one read as the client sees it: whether it answered in
	// the end, and the errors of the tries before.
	read := func() (bool, []error) {
		var errs []error
		clientGo, other := 0, 0
		for ctx.Err() == nil {
			err := get()
			if err == nil {
				return true, errs
			}
			errs = append(errs, err)
			var ra retryAfterError
			asked := errors.As(err, &ra)
			switch {
			case asked || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) || utilnet.IsHTTP2ConnectionLost(err):
				if clientGo == clientGoRetries {
					return false, errs
				}
				clientGo++
				wait := retryWait
				if asked {
					wait = time.Duration(ra.seconds) * retryWait
				}
				pause(ctx, wait)
			case other == 0:
				other++
				if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
					p.timedOut.Add(1)
					p.firstTimeout.CompareAndSwap(nil, fmt.Sprintf("%s: %v", time.Now().Format(time.RFC3339Nano), err))
				}
			default:
				return false, errs
			}
		}
		return false, errs
	}
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		for !p.stopping.Load() && ctx.Err() == nil {
			began := time.Now()
			answered, errs := read()
			if ctx.Err() != nil {
				break // the test ended early: not counted
			}
			if answered {
				p.ok.Add(1)
			} else {
				p.failed.Add(1)
				p.mu.Lock()
				if len(p.failures) < 5 {
					p.failures = append(p.failures, fmt.Sprintf("began %s, gave up %s after %d tries: %v",
						began.Format("15:04:05.000"), time.Now().Format("15:04:05.000"), len(errs), joinErrors(errs)))
				}
				p.mu.Unlock()
			}
			if len(errs) > 0 {
				p.retried.Add(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return p
}

// pause waits d, or less when ctx ends.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// joinErrors lists errors, a run of the same one once with its count.
func joinErrors(errs []error) string {
	var s []string
	for i := 0; i < len(errs); {
		j := i + 1
		for j < len(errs) && errs[j].Error() == errs[i].Error() {
			j++
		}
		if j-i > 1 {
			s = append(s, fmt.Sprintf("%v (%d times)", errs[i], j-i))
		} else {
			s = append(s, errs[i].Error())
		}
		i = j
	}
	return strings.Join(s, "; ")
}

// stop ends the probes (the read under way, retries and all, ends first)
// and fails the test if any read failed (or the loop hardly ran) while
// what happened.
func (p *apiProbe) stop(t *testing.T, what string) {
	t.Helper()
	p.stopping.Store(true)
	p.done.Wait()
	p.cancel()
	t.Logf("API probes while %s: %d ok, %d failed; %d needed a retry (%d after a timeout); the slowest answer in %s", what, p.ok.Load(), p.failed.Load(),
		p.retried.Load(), p.timedOut.Load(), time.Duration(p.slowest.Load()).Round(time.Millisecond))
	if first := p.firstTimeout.Load(); first != nil {
		t.Logf("first timed-out try: %v", first)
	}
	if p.ok.Load() < 20 {
		t.Errorf("only %d successful probes; the probe loop did not run", p.ok.Load())
	}
	if p.failed.Load() > 0 && p.beforeFailure != nil {
		p.beforeFailure()
	}
	if p.failed.Load() > 0 {
		t.Errorf("%d API requests failed while %s: %s", p.failed.Load(), what, strings.Join(p.failures, "; "))
	}
}

// seedDrain drains the seed node with the most etcd members of the highly
// available control plane, as kubectl drain does: the disruption budgets
// keep etcd's quorum (a member whose volume is on the node waits for it)
// and an API server, so no request fails. Uncordoned, every member comes
// back on its volume with the data.
func seedDrain(t *testing.T, host string, cl *lotsev1.Cluster) {
	ctx := context.Background()
	seedCS := clusterClientset(t, host)
	hostedCS := clusterClientset(t, cl.Name)
	ns := seedNamespace(t, cl.Name)
	marker := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "written-before-the-drain", Namespace: "default"}, Data: map[string]string{"k": "v"}}
	if _, err := hostedCS.CoreV1().ConfigMaps("default").Create(ctx, marker, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pods := func(component string) []corev1.Pod {
		list, err := seedCS.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: seed.LabelComponent + "=" + component})
		if err != nil {
			t.Fatal(err)
		}
		return list.Items
	}
	members := map[string]int{}
	for _, p := range pods("etcd") {
		members[p.Spec.NodeName]++
	}
	node := ""
	for n, count := range members {
		if node == "" || count > members[node] {
			node = n
		}
	}
	if node == "" || len(pods("etcd")) != 3 {
		t.Fatalf("etcd members by node: %v", members)
	}
	uncordon := func() {
		n, err := seedCS.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err == nil && n.Spec.Unschedulable {
			n.Spec.Unschedulable = false
			_, err = seedCS.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Errorf("uncordon %s: %v", node, err)
		}
	}
	t.Cleanup(uncordon)

	probe := startAPIProbe(t, adminHTTPClient(t, cl.Name), cl.Status.Endpoint)
	logged := false
	probe.beforeFailure = func() { logSeedNamespace(t, seedCS, ns); logged = true }
	t.Cleanup(func() {
		if t.Failed() && !logged { // the drain timed out
			logSeedNamespace(t, seedCS, ns)
		}
	})
	lowestUp, last := 3, "drained"
	// Drained, or all that is left are etcd members the budget holds.
	waitFor(t, 5*time.Minute, "seed node "+node+" drained but for the members etcd's budget holds", func() (bool, error) {
		// At the pace of a drain, not of waitFor's polls.
		time.Sleep(time.Second)
		drained, blocked, msg, err := drain.Node(ctx, seedCS, node, false)
		if err != nil {
			return false, err
		}
		// The budget keeps a quorum of members running. Ready says
		// more: a member has a leader, which an election (the drained
		// node held the leader) takes away from all of them for a
		// moment, quorum or not.
		up := 0
		for _, p := range pods("etcd") {
			// A member being evicted may still say it runs.
			if p.DeletionTimestamp == nil && containerRunning(p, "etcd") {
				up++
			}
		}
		lowestUp = min(lowestUp, up)
		if drained {
			return true, nil
		}
		if msg != last {
			// A timeline to set the probe's failures against.
			t.Logf("%s drain: %s (%d etcd members running)", time.Now().Format("15:04:05.000"), msg, up)
		}
		last = msg
		held := strings.SplitN(msg, "; blocked by a PodDisruptionBudget: ", 2)
		left := strings.Split(strings.TrimPrefix(held[0], "evicting "), ", ")
		for _, p := range left {
			if !strings.HasPrefix(p, ns+"/etcd-") {
				return false, fmt.Errorf("%s", msg)
			}
		}
		return blocked, fmt.Errorf("%s", msg)
	})
	t.Logf("seed node %s (%d of 3 etcd members): %s; at least %d members running throughout", node, members[node], last, lowestUp)
	// A while in that state: the API serves from the other node.
	time.Sleep(15 * time.Second)
	probe.stop(t, "seed node "+node+" was drained")
	if lowestUp < 2 {
		t.Errorf("only %d etcd members were running during the drain: the budget did not keep the quorum", lowestUp)
	}

	uncordon()
	waitFor(t, 5*time.Minute, "every control-plane pod ready again", func() (bool, error) {
		var notReady []string
		for _, component := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
			for _, p := range pods(component) {
				if !podReady(&p) {
					notReady = append(notReady, describePod(p, false))
				}
			}
		}
		return len(notReady) == 0 && len(pods("etcd")) == 3, fmt.Errorf("not ready: %s", strings.Join(notReady, "; "))
	})
	got, err := hostedCS.CoreV1().ConfigMaps("default").Get(ctx, marker.Name, metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v" {
		t.Errorf("the ConfigMap written before the drain: %v, %v", got, err)
	}
}

// logSeedNamespace logs a hosted control plane's pods and the events in
// its seed namespace, oldest first: what a failed check happened beside.
func logSeedNamespace(t *testing.T, seedCS kubernetes.Interface, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if pods, err := seedCS.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			t.Logf("pod %s", describePod(p, podReady(&p)))
		}
		// What etcd said about its leader and its slowness: an election
		// or a slow disk holds every request up.
		since := int64(600)
		for _, p := range pods.Items {
			if p.Labels[seed.LabelComponent] != "etcd" || p.Status.Phase != corev1.PodRunning {
				continue
			}
			raw, err := seedCS.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: "etcd", SinceSeconds: &since}).DoRaw(ctx)
			if err != nil {
				t.Logf("%s log: %v", p.Name, err)
				continue
			}
			var lines []string
			for _, l := range strings.Split(string(raw), "\n") {
				if strings.Contains(l, "leader") || strings.Contains(l, "took too long") || strings.Contains(l, "\"level\":\"warn\"") {
					lines = append(lines, l)
				}
			}
			if len(lines) > 15 {
				lines = lines[len(lines)-15:]
			}
			t.Logf("%s log, its leader and warnings of the last 10 minutes:\n%s", p.Name, strings.Join(lines, "\n"))
		}
	}
	events, err := seedCS.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	at := func(e corev1.Event) time.Time { return eventTime(e.EventTime.Time, e.LastTimestamp.Time) }
	sort.Slice(events.Items, func(i, j int) bool { return at(events.Items[i]).Before(at(events.Items[j])) })
	if len(events.Items) > 30 {
		events.Items = events.Items[len(events.Items)-30:]
	}
	for _, e := range events.Items {
		t.Logf("event %s %s/%s %s: %s", at(e).Format("15:04:05"), e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
	}
}

// describePod is a line on a pod for a failure message: phase, readiness,
// restarts and what troubles it.
func describePod(p corev1.Pod, ready bool) string {
	restarts := int32(0)
	for _, cs := range p.Status.ContainerStatuses {
		restarts += cs.RestartCount
	}
	s := fmt.Sprintf("%s on %q %s ready=%t restarts=%d", p.Name, p.Spec.NodeName, p.Status.Phase, ready, restarts)
	if why := seed.PodTrouble(p); why != "" {
		s += " (" + why + ")"
	}
	return s
}

// silver selects TestSeed's seed.
func silver() *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "silver"}}
}

// containerRunning says whether a pod's container of that name runs.
func containerRunning(p corev1.Pod, name string) bool {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == name {
			return cs.State.Running != nil
		}
	}
	return false
}
