package process

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/releases/releasestest"
	"github.com/lotse/lotse/internal/supervisor"
	"github.com/lotse/lotse/internal/tasks"
)

// startControlPlane runs a control plane's tasks until they are done.
func startControlPlane(t *testing.T, b *Backend, spec controlplane.Spec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	graph := b.Tasks(spec)
	for {
		results, err := tasks.Run(ctx, graph)
		if err != nil {
			t.Fatal(err)
		}
		if results.Done() {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("control plane %s not up: %s", spec.Key, results.Describe())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tenantEtcdClient connects to the shared datastore with a cluster's own
// credentials, as its API server does.
func tenantEtcdClient(t *testing.T, b *Backend, key string) *clientv3.Client {
	t.Helper()
	p := b.PKI(key)
	caPEM, err := os.ReadFile(p.Cert(pki.DatastoreCAName))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(p.Cert(pki.DatastoreClientName), p.Key(pki.DatastoreClientName))
	if err != nil {
		t.Fatal(err)
	}
	l, err := b.LoadLayout(SharedDatastoreKey)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: l.etcdClientURLs(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		TLS: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func kubeClient(t *testing.T, b *Backend, spec controlplane.Spec) *kubernetes.Clientset {
	t.Helper()
	kc, err := b.AdminKubeconfig(spec)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	return kubernetes.NewForConfigOrDie(cfg)
}

// TestSharedDatastore runs two real control planes on one shared etcd:
// each works, neither can read or write the other's keys with its own
// etcd credentials (nor the keyspace outside its prefix, nor compact it),
// the choice cannot be switched in place, and deleting one removes its
// keys, user and role and leaves the other running.
func TestSharedDatastore(t *testing.T) {
	bins := releasestest.Binaries(t)
	dir, err := os.MkdirTemp("", "lotse-ds-") // short: etcd's unix sockets live below
	if err != nil {
		t.Fatal(err)
	}
	sup := supervisor.New(supervisor.OwnerID(dir), supervisor.Options{})
	b := &Backend{StateDir: dir, Supervisor: sup}
	t.Cleanup(func() {
		sup.StopAll()
		if os.Getenv("KEEP") != "" {
			t.Logf("kept %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	spec := func(name string) controlplane.Spec {
		return controlplane.Spec{Key: "clusters/default/" + name, Name: name, Binaries: bins,
			PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/16", EncryptionProvider: "aescbc",
			WithoutScheduler: true, WithoutTunnel: true, SharedDatastore: true}
	}
	// c1 and c10: one prefix is a string prefix of the other.
	a, other := spec("c1"), spec("c10")
	startControlPlane(t, b, a)
	startControlPlane(t, b, other)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if got := len(b.Supervisor.List(a.Key + "/" + CompEtcd + "-")); got != 0 {
		t.Errorf("a cluster on the shared datastore runs %d etcd members of its own", got)
	}
	ka, ko := kubeClient(t, b, a), kubeClient(t, b, other)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "only-in-c1"}, Data: map[string]string{"k": "v"}}
	if _, err := ka.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ko.CoreV1().ConfigMaps("default").Get(ctx, cm.Name, metav1.GetOptions{}); err == nil {
		t.Error("c10 sees c1's ConfigMap")
	}

	ea := tenantEtcdClient(t, b, a.Key)
	own := datastorePrefix(a.Key) + "/configmaps/default/only-in-c1"
	if resp, err := ea.Get(ctx, own); err != nil || len(resp.Kvs) != 1 {
		t.Errorf("c1 reading its own key %s: %v (%v)", own, resp, err)
	}
	denied := []struct {
		name string
		op   func() error
	}{
		{"read c10's keys", func() error { _, err := ea.Get(ctx, datastorePrefix(other.Key)+"/", clientv3.WithPrefix()); return err }},
		{"write c10's keys", func() error { _, err := ea.Put(ctx, datastorePrefix(other.Key)+"/x", "y"); return err }},
		{"delete c10's keys", func() error {
			_, err := ea.Delete(ctx, datastorePrefix(other.Key)+"/", clientv3.WithPrefix())
			return err
		}},
		{"read the whole keyspace", func() error { _, err := ea.Get(ctx, "", clientv3.WithFromKey()); return err }},
		{"compact", func() error {
			resp, err := ea.Get(ctx, own)
			if err != nil {
				return err
			}
			_, err = ea.Compact(ctx, resp.Header.Revision)
			return err
		}},
		{"add a user", func() error { _, err := ea.UserAdd(ctx, "intruder", "secret"); return err }},
	}
	for _, d := range denied {
		if err := d.op(); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Errorf("c1's etcd user may %s: %v, want permission denied", d.name, err)
		}
	}

	st := b.Status(ctx, a)
	var shared bool
	for _, c := range st.Components {
		if strings.HasPrefix(c.Name, "etcd-shared-") {
			shared = c.Healthy
		}
	}
	if !shared {
		t.Errorf("status of c1 reports no healthy shared datastore: %+v", st.Components)
	}
	if err := b.Snapshot(ctx, a, dir+"/snap.db"); err == nil {
		t.Error("a snapshot of a tenant of the shared datastore was taken; it would hold every tenant's data")
	}
	dedicated := a
	dedicated.SharedDatastore = false
	if _, err := b.ensureLayout(dedicated); err == nil || !strings.Contains(err.Error(), "create a new cluster") {
		t.Errorf("switching c1 to a dedicated datastore in place: %v, want a refusal that points to a new cluster", err)
	}

	// The API server connects as the cluster's own user, not as root.
	la, err := b.LoadLayout(a.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(la.DatastoreUser, a.Key+"@") {
		t.Errorf("c1's etcd user is %q, want %s@ and a random suffix", la.DatastoreUser, a.Key)
	}
	args := strings.Join(b.apiServerSpecs(a, la, b.PKI(a.Key))[0].Args, " ")
	if !strings.Contains(args, "--etcd-certfile="+b.PKI(a.Key).Cert(pki.DatastoreClientName)) || !strings.Contains(args, "--etcd-prefix=/"+a.Key+" ") {
		t.Errorf("c1's API server flags do not name its datastore certificate and prefix: %s", args)
	}
	if cn := certCommonName(t, b.PKI(a.Key).Cert(pki.DatastoreClientName)); cn != la.DatastoreUser {
		t.Errorf("c1's datastore certificate is for %q, want %q", cn, la.DatastoreUser)
	}

	// A role changed by hand (here: c10's keys granted to c1) is set up
	// again by the next reconcile.
	root, err := b.datastoreClient()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	otherPrefix := datastorePrefix(other.Key) + "/"
	if _, err := root.RoleGrantPermission(ctx, la.DatastoreUser, otherPrefix, clientv3.GetPrefixRangeEnd(otherPrefix), clientv3.PermissionType(clientv3.PermRead)); err != nil {
		t.Fatal(err)
	}
	if _, err := ea.Get(ctx, otherPrefix, clientv3.WithPrefix()); err != nil {
		t.Fatalf("the widened role does not work, so its repair proves nothing: %v", err)
	}
	if ok, msg, err := b.ensureDatastoreTenant(ctx, a, la); !ok || err != nil {
		t.Fatalf("repairing c1's role: %s %v", msg, err)
	}
	if _, err := ea.Get(ctx, otherPrefix, clientv3.WithPrefix()); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("c1 reading c10's keys after the repair: %v, want permission denied", err)
	}
	if resp, err := ea.Get(ctx, own); err != nil || len(resp.Kvs) != 1 {
		t.Errorf("c1 reading its own key after the repair: %v (%v)", resp, err)
	}

	// Deleting c1 while the datastore is down fails and is tried again
	// (starting the datastore), never leaving c1's keys behind.
	b.Supervisor.Stop(processName(SharedDatastoreKey, CompEtcd, 0))
	for attempt := 1; ; attempt++ {
		err := b.Delete(ctx, a.Key)
		if err == nil {
			t.Logf("c1 deleted at attempt %d", attempt)
			break
		}
		if _, statErr := os.Stat(b.Dir(a.Key)); statErr != nil {
			t.Fatalf("a failed delete (%v) removed c1's directory, so nothing tries again", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("deleting c1: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	root.Close()
	if root, err = b.datastoreClient(); err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if resp, err := root.Get(ctx, datastorePrefix(a.Key)+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Errorf("keys of the deleted c1 left in the shared datastore: %v (%v)", resp, err)
	}
	if _, err := root.UserGet(ctx, la.DatastoreUser); !errors.Is(err, rpctypes.ErrUserNotFound) {
		t.Errorf("etcd user of the deleted c1: %v, want not found", err)
	}
	if resp, err := root.Get(ctx, datastorePrefix(other.Key)+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count == 0 {
		t.Errorf("c10's keys after c1 was deleted: %v (%v)", resp, err)
	}
	if _, err := ko.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("c10 after c1 was deleted: %v", err)
	}
}

func certCommonName(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.Subject.CommonName
}

func TestDatastoreEtcdNeverGoesBack(t *testing.T) {
	dir := t.TempDir()
	b := &Backend{StateDir: dir}
	bin := func(version string) string {
		p := filepath.Join(dir, "etcd-"+version)
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	first := bin("3.7.3")
	if got, err := b.datastoreEtcd(first, "3.7.3"); err != nil || got != first {
		t.Fatalf("first record: %s, %v", got, err)
	}
	if got, err := b.datastoreEtcd(bin("3.8.0"), "3.8.0"); err != nil || got != first {
		t.Errorf("a later cluster's etcd replaced the recorded one: %s, %v", got, err)
	}
	os.Remove(first)
	if _, err := b.datastoreEtcd(bin("3.6.16"), "3.6.16"); err == nil || !strings.Contains(err.Error(), "build a release with etcd 3.7.3") {
		t.Errorf("an older etcd in place of a lost 3.7.3: %v, want a refusal", err)
	}
	newer := bin("3.7.4")
	if got, err := b.datastoreEtcd(newer, "3.7.4"); err != nil || got != newer {
		t.Errorf("a newer etcd in place of a lost one: %s, %v", got, err)
	}
}

func TestOlderVersion(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"3.6.16", "3.7.3", true}, {"3.7.3", "3.6.16", false}, {"3.7.3", "3.7.3", false},
		{"3.10.0", "3.9.9", false}, {"", "3.7.3", true}, {"3.7", "3.7.1", true},
	} {
		if got := olderVersion(tt.a, tt.b); got != tt.want {
			t.Errorf("olderVersion(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
