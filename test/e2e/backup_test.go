package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/backup"
	"github.com/lotse/lotse/internal/backup/s3test"
)

var snapshotLine = regexp.MustCompile(`snapshot (\d{8}T\d{6}Z) of cluster`)

// TestBackupRestore: a snapshot taken by `lotse cluster backup` restores
// a cluster in place (objects written after it are gone, Secrets read
// back) and into a new cluster (objects and encrypted Secrets readable,
// its own CA); damaged and unknown snapshots are refused with the
// cluster untouched; retention prunes; the same works through a real S3
// server.
func TestBackupRestore(t *testing.T) {
	const name, clone = "keeper", "keeper-clone"
	parallel(t)
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Backup = &lotsev1.BackupSpec{Retention: 2}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = lotseCLI(t, "cluster", "delete", clone, "--wait", "--timeout", "5m")
		_, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m")
	})
	diagnoseOnFailure(t, name)
	waitClusterReady(t, mc, name, 10*time.Minute)
	cs := tenantClient(t, name)

	put := func(cs kubernetes.Interface, kind, key, value string) {
		t.Helper()
		var err error
		if kind == "secret" {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: key, Namespace: "default"}, Data: map[string][]byte{"v": []byte(value)}}
			if _, err = cs.CoreV1().Secrets("default").Update(ctx, s, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
				_, err = cs.CoreV1().Secrets("default").Create(ctx, s, metav1.CreateOptions{})
			}
		} else {
			m := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: key, Namespace: "default"}, Data: map[string]string{"v": value}}
			_, err = cs.CoreV1().ConfigMaps("default").Create(ctx, m, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatalf("write %s %s: %v", kind, key, err)
		}
	}
	// get returns an object's value, "" if there is none.
	get := func(cs kubernetes.Interface, kind, key string) string {
		t.Helper()
		var v string
		waitFor(t, time.Minute, "read "+kind+" "+key, func() (bool, error) {
			if kind == "secret" {
				s, err := cs.CoreV1().Secrets("default").Get(ctx, key, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					v = ""
					return true, nil
				}
				if err != nil {
					return false, err
				}
				v = string(s.Data["v"])
				return true, nil
			}
			m, err := cs.CoreV1().ConfigMaps("default").Get(ctx, key, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				v = ""
				return true, nil
			}
			if err != nil {
				return false, err
			}
			v = m.Data["v"]
			return true, nil
		})
		return v
	}
	takeBackup := func() string {
		t.Helper()
		out := mustCLI(t, "cluster", "backup", name)
		m := snapshotLine.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no snapshot name in %q", out)
		}
		return m[1]
	}
	restore := func(args ...string) (string, error) {
		t.Helper()
		return lotseCLI(t, append([]string{"cluster", "restore", name}, args...)...)
	}
	backupDir := filepath.Join(env.stateDir, "backups", "default", name)

	put(cs, "configmap", "before", "kept")
	put(cs, "secret", "password", "first")
	snap := takeBackup()
	file := filepath.Join(backupDir, backup.FileName(snap))
	sealed, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the snapshot file: %v", err)
	}
	for _, plain := range []string{"kept", "BEGIN EC PRIVATE KEY", "/registry/configmaps"} {
		if bytes.Contains(sealed, []byte(plain)) {
			t.Errorf("the snapshot file shows %q in plain text", plain)
		}
	}
	if got := getCluster(t, mc, name).Status.Backup; got == nil || len(got.Snapshots) != 1 || got.Snapshots[0].Name != snap {
		t.Errorf("status.backup after one backup: %+v", got)
	}

	t.Run("refused: unknown and damaged snapshots", func(t *testing.T) {
		put(cs, "configmap", "during-refusals", "stays")
		if out, err := restore("--from", "20200101T000000Z"); err == nil || !strings.Contains(out, "there is no snapshot") {
			t.Errorf("restore of a missing snapshot: %v\n%s", err, out)
		}
		if out, err := restore("--from", "latest"); err == nil || !strings.Contains(out, "is not a snapshot name") {
			t.Errorf("restore --from latest: %v\n%s", err, out)
		}
		// A truncated copy under another snapshot's name.
		cut := backup.SnapshotName(time.Now().Add(-time.Hour))
		if err := os.WriteFile(filepath.Join(backupDir, backup.FileName(cut)), sealed[:len(sealed)*2/3], 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(filepath.Join(backupDir, backup.FileName(cut)))
		if out, err := restore("--from", cut); err == nil || !strings.Contains(out, "corrupt or truncated") {
			t.Errorf("restore of a truncated snapshot: %v\n%s", err, out)
		}
		if get(cs, "configmap", "during-refusals") != "stays" {
			t.Error("a refused restore changed the cluster")
		}
		if _, ok := getCluster(t, mc, name).Annotations[lotsev1.RestoreAnnotation]; ok {
			t.Error("the restore annotation stayed after a refusal")
		}
	})

	t.Run("in place", func(t *testing.T) {
		put(cs, "configmap", "after", "gone after the restore")
		put(cs, "secret", "password", "second")
		out := mustCLI(t, "cluster", "restore", name, "--from", snap)
		t.Log(strings.TrimSpace(out))
		waitClusterReady(t, mc, name, 5*time.Minute)
		cs := tenantClient(t, name)
		if v := get(cs, "configmap", "before"); v != "kept" {
			t.Errorf("configmap before: %q", v)
		}
		if v := get(cs, "configmap", "after"); v != "" {
			t.Errorf("configmap written after the snapshot is still there: %q", v)
		}
		if v := get(cs, "secret", "password"); v != "first" {
			t.Errorf("secret after the restore: %q, want the snapshot's", v)
		}
		// Written after the restore: the API works on the restored data.
		put(cs, "configmap", "after-restore", "fine")
		got := getCluster(t, mc, name)
		if rs := got.Status.Restore; rs == nil || rs.Step != lotsev1.RestoreStepSucceeded || rs.From != "default/"+name+"/"+snap {
			t.Errorf("status.restore: %+v", rs)
		}
	})

	t.Run("into a new cluster", func(t *testing.T) {
		out := mustCLI(t, "cluster", "restore", name, "--from", snap, "--into", clone)
		t.Log(strings.TrimSpace(out))
		diagnoseOnFailure(t, clone)
		waitClusterReady(t, mc, clone, 10*time.Minute)
		ccs := tenantClient(t, clone)
		if v := get(ccs, "configmap", "before"); v != "kept" {
			t.Errorf("configmap in the clone: %q", v)
		}
		if v := get(ccs, "secret", "password"); v != "first" {
			t.Errorf("secret in the clone: %q", v)
		}
		if raw := readEtcdRaw(t, clone, "/registry/secrets/default/password"); !strings.HasPrefix(raw, "k8s:enc:aescbc:v1:") {
			t.Errorf("the clone's secret is not encrypted in etcd: %.40q", raw)
		}
		caOf := func(n string) []byte {
			b, err := os.ReadFile(filepath.Join(clusterDir(n), "pki", "ca.crt"))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		if bytes.Equal(caOf(name), caOf(clone)) {
			t.Error("the clone shares the source's CA")
		}
		// A snapshot of the clone is refused in place on the source.
		put(ccs, "configmap", "clone-only", "x")
		out = mustCLI(t, "cluster", "backup", clone)
		m := snapshotLine.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no snapshot name in %q", out)
		}
		annotateCluster(t, mc, name, lotsev1.RestoreAnnotation, "default/"+clone+"/"+m[1])
		waitFor(t, time.Minute, "the foreign snapshot refused", func() (bool, error) {
			rs := getCluster(t, mc, name).Status.Restore
			return rs != nil && rs.Step == lotsev1.RestoreStepFailed && strings.Contains(rs.Message, "not of this one"), nil
		})
		if v := get(cs, "configmap", "clone-only"); v != "" {
			t.Error("the clone's snapshot reached the source")
		}
	})

	t.Run("retention", func(t *testing.T) {
		time.Sleep(time.Second) // snapshot names have seconds
		second := takeBackup()
		time.Sleep(time.Second)
		third := takeBackup()
		got := getCluster(t, mc, name).Status.Backup
		var names []string
		for _, s := range got.Snapshots {
			names = append(names, s.Name)
		}
		if strings.Join(names, ",") != second+","+third {
			t.Errorf("kept %v, want the newest two [%s %s]", names, second, third)
		}
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			t.Errorf("the oldest snapshot file is still there: %v", err)
		}
	})

	t.Run("S3", func(t *testing.T) {
		s3 := s3test.Start(t)
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "keeper-s3", Namespace: "default"},
			Data: map[string][]byte{backup.S3AccessKeyID: []byte(s3.AccessKeyID), backup.S3SecretAccessKey: []byte(s3.SecretAccessKey)}}
		if err := mc.Create(ctx, secret); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mc.Delete(context.Background(), secret) })
		updateCluster(t, mc, name, func(c *lotsev1.Cluster) {
			c.Spec.Backup = &lotsev1.BackupSpec{Retention: 3, S3: &lotsev1.S3BackupDestination{
				Endpoint: s3.Endpoint, Bucket: s3.Bucket, Prefix: "lotse", CredentialsSecretRef: lotsev1.SecretReference{Name: secret.Name}}}
		})
		time.Sleep(time.Second)
		put(cs, "configmap", "in-s3", "yes")
		snap := takeBackup()
		if got := getCluster(t, mc, name).Status.Backup; !strings.Contains(got.Destination, "s3://"+s3.Bucket+"/lotse/default/"+name+"/") {
			t.Errorf("destination %q", got.Destination)
		}
		put(cs, "configmap", "not-in-s3", "gone after the restore")
		mustCLI(t, "cluster", "restore", name, "--from", snap)
		waitClusterReady(t, mc, name, 5*time.Minute)
		cs := tenantClient(t, name)
		if get(cs, "configmap", "in-s3") != "yes" || get(cs, "configmap", "not-in-s3") != "" {
			t.Error("the restore from S3 did not bring the cluster back to the snapshot")
		}
		// An unreachable store: the backup fails with a message naming it.
		s3.Stop()
		out, err := lotseCLI(t, "cluster", "backup", name)
		if err == nil || !strings.Contains(out, s3.Endpoint) {
			t.Errorf("backup to a stopped S3 server: %v\n%s", err, out)
		}
	})
}
