// Package e2e tests Lotse end to end on the real binaries: the lotse binary
// (LOTSE_BINARY, built by `make e2e`), upstream Kubernetes and etcd from the
// release cache. One `lotse up` serves all tests; tests that restart it do so
// through the harness.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/managementplane"
	"github.com/lotse/lotse/internal/manager"
	"github.com/lotse/lotse/internal/ports"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/supervisor"
)

// lotse is the harness of the one `lotse up` the tests share.
type lotseUp struct {
	binary   string
	stateDir string
	owner    string
	// metricsAddr serves the manager's metrics; alerts receives its
	// alert webhooks.
	metricsAddr string
	alerts      *alertSink

	mu     sync.Mutex
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// syncBuffer collects a child's output while tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var env *lotseUp

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	binary := os.Getenv("LOTSE_BINARY")
	if binary == "" {
		fmt.Fprintln(os.Stderr, "LOTSE_BINARY is not set; run the end-to-end tests with `make e2e`")
		return 1
	}
	stateDir := os.Getenv("LOTSE_E2E_STATE_DIR")
	if stateDir == "" {
		d, err := os.MkdirTemp("", "lotse-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		stateDir = d
	}
	stateDir, _ = filepath.Abs(stateDir)
	env = &lotseUp{binary: binary, stateDir: stateDir, owner: supervisor.OwnerID(stateDir), alerts: &alertSink{}}
	metricsPort, err := ports.Allocate(1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env.metricsAddr = fmt.Sprintf("127.0.0.1:%d", metricsPort[0])
	sink := httptest.NewServer(env.alerts)
	defer sink.Close()
	env.alerts.url = sink.URL
	// Start from nothing: a previous run that died may have left processes,
	// machines and their host plumbing.
	if _, err := os.Stat(stateDir); err == nil {
		if out, err := exec.Command(binary, "down", "--purge", "--state-dir", stateDir).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "lotse down --purge: %v: %s\n", err, out)
		}
	}
	_ = os.RemoveAll(stateDir)
	defer func() {
		if os.Getenv("LOTSE_E2E_KEEP") != "" {
			env.stop()
			return
		}
		// Clusters that a failed test left are deleted the normal way first.
		deleteAllClusters()
		env.stop()
		if out, err := exec.Command(binary, "down", "--purge", "--state-dir", stateDir).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "lotse down --purge: %v: %s\n", err, out)
		}
		if left := supervisor.FindProcesses(env.owner); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "processes left after the tests: %v\n", left)
		}
	}()
	if err := env.start(); err != nil {
		fmt.Fprintln(os.Stderr, "lotse up:", err)
		return 1
	}
	return m.Run()
}

// start runs `lotse up` and waits until its manager serves.
func (l *lotseUp) start() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := &syncBuffer{}
	// Alerts after 20 s (not 5 min) and repairs after 90 s (not 3 min),
	// so the care test sees them in minutes.
	args := []string{"up", "--state-dir", l.stateDir, "--metrics-bind-address", l.metricsAddr,
		"--alert-webhook", l.alerts.url, "--alert-after", "20s", "--restart-unhealthy-after", "90s"}
	// Benchmarks compare manager settings (e.g. --apiserver-gogc 50).
	args = append(args, strings.Fields(os.Getenv("LOTSE_E2E_UP_ARGS"))...)
	cmd := exec.Command(l.binary, args...)
	cmd.Stdout, cmd.Stderr = out, out
	// If the test binary dies (a timeout, a kill), lotse up gets the
	// Ctrl-C it would get from a person and stops its control planes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	l.cmd, l.out, l.exited = cmd, out, exited
	deadline := time.After(5 * time.Minute)
	for {
		if strings.Contains(out.String(), "lotse is up") {
			return nil
		}
		select {
		case <-exited:
			l.cmd = nil
			return fmt.Errorf("lotse up exited:\n%s", out.String())
		case <-deadline:
			return fmt.Errorf("lotse up did not come up in 5 minutes:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop interrupts `lotse up` like Ctrl-C and waits for it.
func (l *lotseUp) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cmd == nil {
		return
	}
	_ = l.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-l.exited:
	case <-time.After(2 * time.Minute):
		_ = l.cmd.Process.Kill()
		<-l.exited
	}
	l.cmd = nil
}

// crash kills `lotse up` with SIGKILL: nothing gets cleaned up.
func (l *lotseUp) crash() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cmd == nil {
		return
	}
	_ = l.cmd.Process.Kill()
	<-l.exited
	l.cmd = nil
}

func (l *lotseUp) kubeconfig() string {
	return filepath.Join(l.stateDir, managementplane.KubeconfigFile)
}

// lotseCLI runs the lotse CLI against the shared management plane.
func lotseCLI(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(env.binary, args...)
	cmd.Env = append(os.Environ(), "LOTSE_KUBECONFIG="+env.kubeconfig())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := lotseCLI(t, args...)
	if err != nil {
		t.Fatalf("lotse %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// mgmtClient is a client of the management API.
func mgmtClient(t testing.TB) client.Client {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", env.kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := t.(*testing.B); ok {
		// A benchmark times what it waits for: waitFor's polls every
		// 100 ms must not wait 200 ms each in client-go's default limit
		// (5 requests a second). Tests keep that limit, so that many of
		// them polling at once do not crowd the management API.
		cfg.QPS, cfg.Burst = 1000, 1000
	}
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls cond until it returns true or the timeout passes. The
// timeout is how long to wait before giving up, not a figure the test
// checks (benchmarks measure those): CI's machine, slower than a
// developer's and running the same three slots, gets it scaled
// (timeoutScale).
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	timeout = time.Duration(float64(timeout) * timeoutScale())
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
}

// kubectlExec runs a command in a pod (namespace default) with kubectl
// exec. When kubectl fails before the command ran (no "command terminated
// with exit code" in its output: the API server, the tunnel or the kubelet
// did not get it through on a busy host), it tries again for up to 2
// minutes; the command's own result is returned as it is. The tests check
// what the command does, not that every exec passes at the first try.
func kubectlExec(t testing.TB, kubeconfig, pod string, command ...string) (string, error) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, kubectlPath(t), append([]string{"--kubeconfig", kubeconfig, "exec", pod, "--"}, command...)...).CombinedOutput()
		cancel()
		if err == nil || strings.Contains(string(out), "command terminated with exit code") || time.Now().After(deadline) {
			return string(out), err
		}
		t.Logf("kubectl exec %s: %v: %.200s (trying again)", pod, err, out)
		time.Sleep(2 * time.Second)
	}
}

func getCluster(t testing.TB, c client.Client, name string) *lotsev1.Cluster {
	t.Helper()
	cl := &lotsev1.Cluster{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, cl); err != nil {
		t.Fatalf("get cluster %s: %v", name, err)
	}
	return cl
}

func waitClusterReady(t testing.TB, c client.Client, name string, timeout time.Duration) *lotsev1.Cluster {
	t.Helper()
	var cl *lotsev1.Cluster
	waitFor(t, timeout, "cluster "+name+" Ready", func() (bool, error) {
		cl = &lotsev1.Cluster{}
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, cl); err != nil {
			return false, err
		}
		return cl.Status.ObservedGeneration == cl.Generation && meta.IsStatusConditionTrue(cl.Status.Conditions, lotsev1.ConditionReady), nil
	})
	return cl
}

// clusterProcesses lists the live processes of a cluster's control plane.
func clusterProcesses(name string) []supervisor.Found {
	var out []supervisor.Found
	for _, f := range supervisor.FindProcesses(env.owner) {
		if strings.HasPrefix(f.Name, "clusters/default/"+name+"/") {
			out = append(out, f)
		}
	}
	return out
}

func clusterDir(name string) string {
	return filepath.Join(env.stateDir, "clusters", "default", name)
}

func kubectlPath(t testing.TB) string {
	t.Helper()
	store := releases.NewStore(releases.DefaultCacheDir())
	bins, err := store.Binaries(releases.Default())
	if err != nil {
		t.Fatal(err)
	}
	return bins.Path("kubectl")
}

// updateCluster changes a cluster's spec, retrying when the status writer
// got in between.
func updateCluster(t testing.TB, c client.Client, name string, change func(*lotsev1.Cluster)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cl := getCluster(t, c, name)
		change(cl)
		return c.Update(context.Background(), cl)
	})
	if err != nil {
		t.Fatalf("update cluster %s: %v", name, err)
	}
}

// annotateCluster sets one annotation of a cluster, keeping the others.
func annotateCluster(t testing.TB, c client.Client, name, key, value string) {
	t.Helper()
	cl := getCluster(t, c, name)
	before := cl.DeepCopy()
	if cl.Annotations == nil {
		cl.Annotations = map[string]string{}
	}
	cl.Annotations[key] = value
	if err := c.Patch(context.Background(), cl, client.MergeFrom(before)); err != nil {
		t.Fatalf("annotate cluster %s: %v", name, err)
	}
}

// deleteAllClusters deletes every Cluster and waits (up to 3 minutes) until
// they are gone, so their machines are cleaned up by Lotse itself.
func deleteAllClusters() {
	cfg, err := clientcmd.BuildConfigFromFlags("", env.kubeconfig())
	if err != nil {
		return
	}
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	all := &lotsev1.ClusterList{}
	if err := c.List(ctx, all); err == nil {
		for i := range all.Items {
			_ = c.Delete(ctx, &all.Items[i])
		}
	}
	for ctx.Err() == nil {
		list := &lotsev1.ClusterList{}
		if err := c.List(ctx, list); err != nil || len(list.Items) == 0 {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "clusters still exist after 3 minutes; purging the host instead")
}

// scaled is a timeout for a command's --timeout flag, scaled as waitFor's.
func scaled(d time.Duration) string {
	return time.Duration(float64(d) * timeoutScale()).String()
}

// timeoutScale multiplies waitFor's timeouts: LOTSE_E2E_TIMEOUT_SCALE, or
// 2 when CI is set (its cold runs took 1.2 to 1.8 times as long as a
// warm local run, TestSeed's subtests the most), else 1.
func timeoutScale() float64 {
	if f, err := strconv.ParseFloat(os.Getenv("LOTSE_E2E_TIMEOUT_SCALE"), 64); err == nil && f > 0 {
		return f
	}
	if os.Getenv("CI") != "" {
		return 2
	}
	return 1
}
