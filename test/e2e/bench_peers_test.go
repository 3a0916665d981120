package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/supervisor"
)

// peerSample is one cluster of one system: seconds from the request to a
// ready API, and the memory of its control-plane processes 30 s later.
type peerSample struct{ seconds, rss, pss float64 }

// BenchmarkVersusKwokctl measures Lotse and kwokctl (binary runtime, fed
// the same upstream kube-apiserver, controller-manager, scheduler and etcd
// binaries of the default release) in one run, one cluster at a time, and
// reports both and their ratios:
//   - seconds from the request to a ready API as each tool reports it
//     (Lotse: the Cluster's APIServerAvailable condition, seen by a client
//     watching the status; kwokctl: `create cluster --wait` returning);
//   - the idle memory 30 s later, RSS and PSS summed over the control
//     plane's processes (Lotse: etcd, API server, controller-manager,
//     scheduler, konnectivity server; on the shared datastore without the
//     etcd every cluster shares; kwokctl: etcd, API server,
//     controller-manager, scheduler and its kwok controller).
//
// make bench builds kwokctl from its Go module (make peers) and sets
// LOTSE_KWOK_DIR:
//
//	make peers && LOTSE_KWOK_DIR=~/.cache/lotse/peers/kwok-v0.8.0 LOTSE_BINARY=bin/lotse \
//	  go test -run '^$' -bench VersusKwokctl -benchtime 3x ./test/e2e/
func BenchmarkVersusKwokctl(b *testing.B) {
	dir := os.Getenv("LOTSE_KWOK_DIR")
	if dir == "" {
		b.Skip("needs LOTSE_KWOK_DIR, a directory with kwokctl and kwok (make peers builds them)")
	}
	bins, err := releases.NewStore(releases.DefaultCacheDir()).Binaries(releases.Default())
	if err != nil {
		b.Fatal(err)
	}
	work := b.TempDir()
	mc := mgmtClient(b)
	var dedicated, shared, kwok []peerSample
	for i := 0; i < b.N; i++ {
		// Processes are listed for the first round only: go test keeps
		// ten lines of a benchmark's log.
		dedicated = append(dedicated, lotseSample(b, mc, fmt.Sprintf("vs-kwok-%d", i), lotsev1.DatastoreDedicated, i == 0))
		shared = append(shared, lotseSample(b, mc, fmt.Sprintf("vs-kwok-shared-%d", i), lotsev1.DatastoreShared, i == 0))
		kwok = append(kwok, kwokctlSample(b, dir, work, fmt.Sprintf("vs-lotse-%d", i), bins, i == 0))
	}
	report := func(name string, s []peerSample) (seconds, rss, pss float64) {
		var sec, r, p []float64
		for _, x := range s {
			sec, r, p = append(sec, x.seconds), append(r, x.rss), append(p, x.pss)
		}
		seconds, rss, pss = median(sec), median(r), median(p)
		b.ReportMetric(seconds, "s-"+name)
		b.ReportMetric(rss, "MiB-rss-"+name)
		b.ReportMetric(pss, "MiB-pss-"+name)
		b.Logf("%s: seconds %v, RSS MiB %v, PSS MiB %v", name, sec, r, p)
		return
	}
	ds, dr, dp := report("lotse", dedicated)
	ss, sr, sp := report("lotse-shared", shared)
	ks, kr, kp := report("kwokctl", kwok)
	// Below 1: Lotse is faster or leaner than kwokctl.
	b.ReportMetric(ds/ks, "x-seconds")
	b.ReportMetric(dr/kr, "x-rss")
	b.ReportMetric(dp/kp, "x-pss")
	b.ReportMetric(ss/ks, "x-seconds-shared")
	b.ReportMetric(sr/kr, "x-rss-shared")
	b.ReportMetric(sp/kp, "x-pss-shared")
}

func lotseSample(b *testing.B, mc client.Client, name, datastore string, verbose bool) peerSample {
	b.Helper()
	cl := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	cl.Spec.ControlPlane.Datastore = datastore
	start := time.Now()
	if err := mc.Create(context.Background(), cl); err != nil {
		b.Fatal(err)
	}
	// Gone before the next benchmark, even when this one fails.
	b.Cleanup(func() { _ = mc.Delete(context.Background(), cl) })
	waitFor(b, 3*time.Minute, name+" APIServerAvailable", func() (bool, error) {
		cur := &lotsev1.Cluster{}
		if err := mc.Get(context.Background(), client.ObjectKeyFromObject(cl), cur); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(cur.Status.Conditions, lotsev1.ConditionAPIServerAvailable), nil
	})
	s := peerSample{seconds: time.Since(start).Seconds()}
	time.Sleep(30 * time.Second)
	var parts []string
	for _, p := range clusterProcesses(name) {
		s.rss += rssMiB(p)
		s.pss += pssMiB(p)
		parts = append(parts, fmt.Sprintf("%s %.0f", componentOf(p.Name), rssMiB(p)))
	}
	if want := 4; datastore == lotsev1.DatastoreShared && len(parts) != want || datastore != lotsev1.DatastoreShared && len(parts) != want+1 {
		b.Fatalf("%s runs %d processes (%s); a sample of a control plane missing a process means nothing", name, len(parts), strings.Join(parts, ", "))
	}
	if verbose {
		b.Logf("%s (%s): RSS MiB by process: %s", name, datastore, strings.Join(parts, ", "))
	}
	deleteAndWait(b, mc, cl)
	return s
}

func kwokctlSample(b *testing.B, dir, work, name string, bins releases.Binaries, verbose bool) peerSample {
	b.Helper()
	run := func(args ...string) error {
		cmd := exec.Command(filepath.Join(dir, "kwokctl"), args...)
		cmd.Env = append(os.Environ(), "KWOK_WORKDIR="+work)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("kwokctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	kwokctl := func(args ...string) {
		b.Helper()
		if err := run(args...); err != nil {
			b.Fatal(err)
		}
	}
	// Registered before the create, so a failed one is removed too; the
	// work directory (with the pid files) goes only after it.
	b.Cleanup(func() { _ = run("delete", "cluster", "--name", name) })
	start := time.Now()
	kwokctl("create", "cluster", "--name", name, "--runtime", "binary", "--wait", "2m",
		"--kube-apiserver-binary", bins.Path("kube-apiserver"),
		"--kube-controller-manager-binary", bins.Path("kube-controller-manager"),
		"--kube-scheduler-binary", bins.Path("kube-scheduler"),
		"--etcd-binary", bins.Path("etcd"),
		"--kwok-controller-binary", filepath.Join(dir, "kwok"))
	s := peerSample{seconds: time.Since(start).Seconds()}
	defer kwokctl("delete", "cluster", "--name", name)
	time.Sleep(30 * time.Second)
	pids, err := filepath.Glob(filepath.Join(work, "clusters", name, "pids", "*.pid"))
	if err != nil || len(pids) == 0 {
		b.Fatalf("no pid files of kwokctl's cluster %s: %v", name, err)
	}
	var parts []string
	for _, f := range pids {
		data, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil {
			b.Fatalf("%s: %v", f, err)
		}
		p := supervisor.Found{PID: pid}
		if rssMiB(p) == 0 {
			b.Fatalf("kwokctl's %s (pid %d) is not running", filepath.Base(f), pid)
		}
		s.rss += rssMiB(p)
		s.pss += pssMiB(p)
		parts = append(parts, fmt.Sprintf("%s %.0f", strings.TrimSuffix(filepath.Base(f), ".pid"), rssMiB(p)))
	}
	if verbose {
		b.Logf("%s (kwokctl): RSS MiB by process: %s", name, strings.Join(parts, ", "))
	}
	return s
}
