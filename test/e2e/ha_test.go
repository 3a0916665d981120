package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/supervisor"
)

// TestHighAvailability: an HA cluster keeps answering API requests while
// one etcd member and then one API server are killed, and the supervisor
// brings the killed processes back.
func TestHighAvailability(t *testing.T) {
	parallel(t)
	const name = "ha"
	mustCLI(t, "cluster", "create", name, "--ha", "--wait", "--timeout", scaled(3*time.Minute))
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait") })
	mc := mgmtClient(t)
	cl := getCluster(t, mc, name)

	checkHAProcesses(t, name)

	// Probe the API through the cluster endpoint continuously, each request
	// on a new connection, as independent clients would.
	probe := startAPIProbe(t, adminHTTPClient(t, name), cl.Status.Endpoint)

	// Each time the restarted process itself must answer its health
	// check (evidence newer than the kill: a Ready condition from before
	// it proves nothing, and Lotse may never have seen the short outage).
	killAndAwaitRestart(t, name+"/etcd-1")
	waitProbedHealthy(t, name, true)
	waitClusterReady(t, mc, name, 2*time.Minute)
	killAndAwaitRestart(t, name+"/kube-apiserver-0")
	waitProbedHealthy(t, name, true)
	waitClusterReady(t, mc, name, 2*time.Minute)
	time.Sleep(time.Second)
	probe.stop(t, "one member was down")
}

// checkHAProcesses checks that an HA cluster runs exactly its processes:
// 3 etcd members, 2 API servers, 2 controller-managers and schedulers, 1
// load balancer.
func checkHAProcesses(t *testing.T, name string) {
	t.Helper()
	count := map[string]int{}
	for _, p := range clusterProcesses(name) {
		count[componentOf(p.Name)]++
	}
	want := map[string]int{"etcd": 3, "kube-apiserver": 2, "kube-controller-manager": 2, "kube-scheduler": 2, "loadbalancer": 1}
	for comp, n := range want {
		if count[comp] != n {
			t.Errorf("%s: %d processes, want %d (all: %v)", comp, count[comp], n, count)
		}
	}
}

// waitProbedHealthy probes every control-plane process of a cluster now,
// the way Lotse's backend does (not its last recorded status), until all
// of them answer their health checks.
func waitProbedHealthy(t *testing.T, name string, ha bool) {
	t.Helper()
	b := &process.Backend{StateDir: env.stateDir}
	spec := controlplane.Spec{Key: clusterref.Ref{Namespace: "default", Name: name}.Key(), HighAvailability: ha}
	waitFor(t, 2*time.Minute, name+": every control-plane process answering its health check", func() (bool, error) {
		st := b.Status(context.Background(), spec)
		return st.Healthy() && st.APIServerAvailable, fmt.Errorf("unhealthy: %+v", st.Unhealthy())
	})
}

func componentOf(processName string) string {
	base := filepath.Base(processName)
	for i := len(base) - 1; i >= 0; i-- {
		if base[i] == '-' {
			return base[:i]
		}
	}
	return base
}

// killAndAwaitRestart SIGKILLs a cluster's process ("cluster/etcd-1") and
// waits until the supervisor has started a new one under the same name.
func killAndAwaitRestart(t *testing.T, which string) {
	t.Helper()
	full := "clusters/default/" + which
	var old supervisor.Found
	for _, f := range supervisor.FindProcesses(env.owner) {
		if f.Name == full {
			old = f
		}
	}
	if old.PID == 0 {
		t.Fatalf("no process %s", full)
	}
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s (pid %d)", full, old.PID)
	waitFor(t, time.Minute, "a new "+full, func() (bool, error) {
		for _, f := range supervisor.FindProcesses(env.owner) {
			if f.Name == full && f.PID != old.PID {
				return true, nil
			}
		}
		return false, nil
	})
}

// adminHTTPClient authenticates with the cluster's admin certificate and
// opens a new connection for every request.
func adminHTTPClient(t testing.TB, name string) *http.Client {
	t.Helper()
	p := pki.ClusterPKI{Dir: filepath.Join(clusterDir(name), "pki")}
	cert, err := tls.LoadX509KeyPair(p.Cert(pki.AdminName), p.Key(pki.AdminName))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(p.Cert(pki.CAName))
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{
		// A request that waits out an etcd leader election on a busy
		// machine is slow, not failed (kubectl waits without a limit);
		// a request that hangs is still caught. apiProbe reports the
		// slowest.
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
		},
	}
}

// checkConfigMapsKept checks that ConfigMaps format%d, 0 <= i < n, are
// all in namespace. It counts them by name: kube-root-ca.crt is the
// controller-manager's, and under load it may not have written it yet.
func checkConfigMapsKept(t *testing.T, cs kubernetes.Interface, namespace, format string, n int) {
	t.Helper()
	cms, err := cs.CoreV1().ConfigMaps(namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for _, cm := range cms.Items {
		kept[cm.Name] = true
	}
	for i := range n {
		if name := fmt.Sprintf(format, i); !kept[name] {
			t.Errorf("ConfigMap %s/%s is gone (%d ConfigMaps left)", namespace, name, len(cms.Items))
		}
	}
}

// TestMakeHighlyAvailable: a single-replica cluster with data becomes
// highly available in place: etcd grows to three voting members, two API
// servers serve behind a balancer on the old endpoint, every object is
// still there, and the cluster then survives the loss of the member that
// held the data at first.
func TestMakeHighlyAvailable(t *testing.T) {
	const name = "grow"
	parallel(t)
	mustCLI(t, "cluster", "create", name, "--wait", "--timeout", scaled(3*time.Minute))
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait") })
	mc := mgmtClient(t)
	before := getCluster(t, mc, name)
	cs := tenantClient(t, name)
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "data"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const n = 30
	for i := range n {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%d", i)}, Data: map[string]string{"i": fmt.Sprint(i)}}
		if _, err := cs.CoreV1().ConfigMaps("data").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, StringData: map[string]string{"password": "kept"}}
	if _, err := cs.CoreV1().Secrets("data").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	updateCluster(t, mc, name, func(c *lotsev1.Cluster) { c.Spec.ControlPlane.HighAvailability = true })
	waitFor(t, 5*time.Minute, name+" highly available and Ready", func() (bool, error) {
		c := getCluster(t, mc, name)
		return c.Status.ObservedGeneration == c.Generation && c.Status.Phase == lotsev1.PhaseRunning, fmt.Errorf("%s", describeOp(c))
	})
	waitProbedHealthy(t, name, true)
	checkHAProcesses(t, name)
	if after := getCluster(t, mc, name); after.Status.Endpoint != before.Status.Endpoint {
		t.Errorf("endpoint moved from %s to %s", before.Status.Endpoint, after.Status.Endpoint)
	}
	ec := etcdClient(t, name)
	defer ec.Close()
	members, err := ec.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(members.Members) != 3 {
		t.Errorf("etcd has %d members, want 3", len(members.Members))
	}
	for _, m := range members.Members {
		if m.IsLearner {
			t.Errorf("etcd member %s is still a learner", m.Name)
		}
	}

	// The data is all there, read through the old kubeconfig.
	checkConfigMapsKept(t, cs, "data", "cm-%d", n)
	got, err := cs.CoreV1().Secrets("data").Get(ctx, "s", metav1.GetOptions{})
	if err != nil || string(got.Data["password"]) != "kept" {
		t.Errorf("secret after the change: %v (%v)", got, err)
	}

	// The member that held the data at first may now fail: the two new
	// ones keep the quorum.
	var etcd0 int
	for _, p := range clusterProcesses(name) {
		if strings.HasSuffix(p.Name, "/etcd-0") {
			etcd0 = p.PID
		}
	}
	if etcd0 == 0 {
		t.Fatal("no etcd-0 process")
	}
	if err := syscall.Kill(etcd0, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(etcd0, syscall.SIGCONT)
	// If etcd-0 led, the first request may time out while the other two
	// elect a new leader; then writes work without it.
	waitFor(t, 2*time.Minute, "a write while etcd-0 is frozen", func() (bool, error) {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := cs.CoreV1().ConfigMaps("data").Create(wctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "while-etcd-0-is-frozen"}}, metav1.CreateOptions{})
		return err == nil, err
	})
}
