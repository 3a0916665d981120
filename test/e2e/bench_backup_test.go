package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// BenchmarkBackupRestore measures, on a cluster holding 10,000 objects
// (9,000 ConfigMaps and 1,000 encrypted Secrets of 1 KiB each), the
// seconds from asking for a backup to the snapshot being stored (etcd
// snapshot, sealing, writing to the directory) and from asking for an in
// place restore to the API answering on the restored data, and the
// snapshot file's size.
//
//	make build && LOTSE_BINARY=$PWD/bin/lotse LOTSE_E2E_STATE_DIR=/tmp/lotse-bench \
//	  go test -count=1 -timeout 60m -run '^$' -bench BackupRestore -benchtime 3x ./test/e2e/
func BenchmarkBackupRestore(b *testing.B) {
	const name = "bench-backup"
	mc := mgmtClient(b)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Backup = &lotsev1.BackupSpec{Retention: 3}
	if err := mc.Create(ctx, c); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { deleteAndWait(b, mc, c) })
	waitClusterReady(b, mc, name, 10*time.Minute)
	cfg := tenantConfig(b, name)
	cfg.QPS, cfg.Burst = 2000, 2000
	cs := kubernetes.NewForConfigOrDie(cfg)
	start := time.Now()
	fill(b, cs, 10000)
	b.Logf("10,000 objects written in %s", time.Since(start).Round(100*time.Millisecond))

	annotate := func(key, value string) { annotateCluster(b, mc, name, key, value) }
	var backups, restores []float64
	var size int64
	for i := 0; i < b.N; i++ {
		previous := ""
		if s := getCluster(b, mc, name).Status.Backup; s != nil {
			previous = s.LastSnapshot
		}
		time.Sleep(time.Second) // snapshot names have seconds
		start := time.Now()
		annotate(lotsev1.OperationAnnotation, lotsev1.OperationBackup)
		var snap string
		waitFor(b, 5*time.Minute, "the snapshot", func() (bool, error) {
			s := getCluster(b, mc, name).Status.Backup
			if s != nil && s.LastSnapshot != previous && len(s.Snapshots) > 0 {
				snap, size = s.LastSnapshot, s.Snapshots[len(s.Snapshots)-1].Size
				return true, nil
			}
			return false, nil
		})
		backups = append(backups, time.Since(start).Seconds())

		start = time.Now()
		annotate(lotsev1.RestoreAnnotation, snap)
		waitFor(b, 5*time.Minute, "the restore", func() (bool, error) {
			cl := getCluster(b, mc, name)
			rs := cl.Status.Restore
			_, pending := cl.Annotations[lotsev1.RestoreAnnotation]
			return !pending && rs != nil && rs.Step == lotsev1.RestoreStepSucceeded && rs.From == "default/"+name+"/"+snap, nil
		})
		waitFor(b, time.Minute, "the restored API", func() (bool, error) {
			_, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "object-9999", metav1.GetOptions{})
			return err == nil, err
		})
		restores = append(restores, time.Since(start).Seconds())
	}
	b.ReportMetric(median(backups), "s-backup")
	b.ReportMetric(median(restores), "s-restore")
	b.ReportMetric(float64(size)/(1<<20), "MiB-snapshot")
	b.Logf("backup: %v s; restore: %v s; snapshot %.1f MiB", backups, restores, float64(size)/(1<<20))
}

// fill writes n objects: every tenth a Secret, the rest ConfigMaps.
func fill(b testing.TB, cs kubernetes.Interface, n int) {
	ctx := context.Background()
	value := make([]byte, 1024)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := fmt.Sprintf("object-%d", i)
				var err error
				if i%10 == 0 {
					_, err = cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{"v": value}}, metav1.CreateOptions{})
				} else {
					_, err = cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": string(value)}}, metav1.CreateOptions{})
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}
