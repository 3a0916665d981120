package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/supervisor"
)

// densityFloorMiB is the memory the density benchmark leaves the host: it
// creates no further wave of clusters once less is available.
const densityFloorMiB = 2048

// BenchmarkDensity fills the machine with workerless single-replica
// clusters: LOTSE_DENSITY_CLUSTERS (default 50), created in waves of 10
// (each wave created at once, the next when its API servers answer),
// stopping early when less than 2 GiB of memory is left. It reports how
// many clusters run, how many are Ready after a minute of idling, the
// creation throughput, their memory (the sum of the control-plane
// processes' RSS and PSS, the shared datastore included, and how much
// MemAvailable fell) and the CPU they use while idle. dedicated and
// shared are the two datastores.
//
//	LOTSE_BINARY=bin/lotse go test -count=1 -timeout 60m -run '^$' -bench 'Density/shared' -benchtime 1x ./test/e2e/
func BenchmarkDensity(b *testing.B) {
	want := 50
	if v := os.Getenv("LOTSE_DENSITY_CLUSTERS"); v != "" {
		var err error
		if want, err = strconv.Atoi(v); err != nil || want < 1 {
			b.Fatalf("LOTSE_DENSITY_CLUSTERS=%q: want a number of clusters", v)
		}
	}
	for _, datastore := range []string{lotsev1.DatastoreDedicated, lotsev1.DatastoreShared} {
		b.Run(datastore, func(b *testing.B) {
			for range b.N {
				densityRun(b, datastore, want)
			}
		})
	}
}

func densityRun(b *testing.B, datastore string, want int) {
	mc := mgmtClient(b)
	ctx := context.Background()
	var made []*lotsev1.Cluster
	b.Cleanup(func() {
		// All at once, then wait: the manager deletes them in parallel.
		for _, cl := range made {
			_ = mc.Delete(ctx, cl)
		}
		for _, cl := range made {
			waitFor(b, 5*time.Minute, "cluster "+cl.Name+" deleted", func() (bool, error) {
				err := mc.Get(ctx, client.ObjectKeyFromObject(cl), &lotsev1.Cluster{})
				return client.IgnoreNotFound(err) == nil && err != nil, nil
			})
		}
	})
	availableBefore := memAvailableMiB(b)
	start := time.Now()
	const wave = 10
	for len(made) < want {
		if free := memAvailableMiB(b); free < densityFloorMiB {
			b.Logf("stopping at %d clusters: %.0f MiB available", len(made), free)
			break
		}
		var thisWave []*lotsev1.Cluster
		for i := 0; i < wave && len(made) < want; i++ {
			cl := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("dense-%s-%02d", datastore[:1], len(made))}}
			cl.Spec.ControlPlane.Datastore = datastore
			if err := mc.Create(ctx, cl); err != nil {
				b.Fatal(err)
			}
			made = append(made, cl)
			thisWave = append(thisWave, cl)
		}
		for _, cl := range thisWave {
			waitFor(b, 10*time.Minute, cl.Name+" APIServerAvailable", func() (bool, error) {
				cur := &lotsev1.Cluster{}
				if err := mc.Get(ctx, client.ObjectKeyFromObject(cl), cur); err != nil {
					return false, err
				}
				return meta.IsStatusConditionTrue(cur.Status.Conditions, lotsev1.ConditionAPIServerAvailable), nil
			})
		}
		b.Logf("%d clusters answer after %s; %.0f MiB available", len(made), time.Since(start).Round(time.Second), memAvailableMiB(b))
	}
	created := time.Since(start)

	// A minute of idling, with the CPU the control planes use meanwhile.
	procs := densityProcesses(made)
	cpuBefore := cpuByComponent(procs)
	time.Sleep(time.Minute)
	idleCores := 0.0
	var byComponent []string
	for comp, sec := range cpuByComponent(procs) {
		cores := (sec - cpuBefore[comp]) / 60
		idleCores += cores
		byComponent = append(byComponent, fmt.Sprintf("%s %.3f", comp, cores))
	}
	sort.Strings(byComponent)
	b.Logf("idle cores by component, all clusters together: %s", strings.Join(byComponent, ", "))

	ready := 0
	for _, cl := range made {
		cur := &lotsev1.Cluster{}
		if err := mc.Get(ctx, client.ObjectKeyFromObject(cl), cur); err != nil {
			b.Fatal(err)
		}
		if meta.IsStatusConditionTrue(cur.Status.Conditions, lotsev1.ConditionReady) {
			ready++
		} else {
			b.Logf("%s not Ready: %+v", cl.Name, meta.FindStatusCondition(cur.Status.Conditions, lotsev1.ConditionReady))
		}
	}
	var rss, pss float64
	for _, p := range densityProcesses(made) {
		rss += rssMiB(p)
		pss += pssMiB(p)
	}
	n := float64(len(made))
	b.ReportMetric(n, "clusters")
	b.ReportMetric(float64(ready), "ready")
	b.ReportMetric(n/created.Minutes(), "clusters/min")
	b.ReportMetric(rss/1024, "GiB-rss")
	b.ReportMetric(pss/1024, "GiB-pss")
	b.ReportMetric(pss/n, "MiB-pss/cluster")
	b.ReportMetric((availableBefore-memAvailableMiB(b))/1024, "GiB-available-fell")
	b.ReportMetric(idleCores, "cores-idle")
	if ready < len(made) {
		b.Errorf("%d of %d clusters Ready after a minute of idling", ready, len(made))
	}
}

// densityProcesses are the control-plane processes of the clusters, and
// the shared datastore's.
func densityProcesses(clusters []*lotsev1.Cluster) []supervisor.Found {
	names := map[string]bool{}
	for _, cl := range clusters {
		names[cl.Name] = true
	}
	var out []supervisor.Found
	for _, p := range supervisor.FindProcesses(env.owner) {
		parts := strings.Split(p.Name, "/")
		if len(parts) > 3 && parts[0] == "clusters" && parts[1] == "default" && names[parts[2]] ||
			strings.HasPrefix(p.Name, process.SharedDatastoreKey+"/") {
			out = append(out, p)
		}
	}
	return out
}

// cpuByComponent sums the user and system CPU seconds of processes by
// component (etcd, kube-apiserver, ...).
func cpuByComponent(procs []supervisor.Found) map[string]float64 {
	total := map[string]float64{}
	for _, p := range procs {
		data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.PID), "stat"))
		if err != nil {
			continue
		}
		// The fields after the command (which may hold spaces) in parentheses.
		s := string(data)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) < 13 {
			continue
		}
		utime, _ := strconv.ParseFloat(fields[11], 64)
		stime, _ := strconv.ParseFloat(fields[12], 64)
		total[componentOf(p.Name)] += (utime + stime) / 100 // clock ticks (USER_HZ)
	}
	return total
}

// memAvailableMiB is the host's MemAvailable.
func memAvailableMiB(tb testing.TB) float64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 2 && fields[0] == "MemAvailable:" {
			kb, _ := strconv.ParseFloat(fields[1], 64)
			return kb / 1024
		}
	}
	tb.Fatal("no MemAvailable in /proc/meminfo")
	return 0
}
