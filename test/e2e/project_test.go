package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	clustercontroller "github.com/lotse/lotse/internal/controller/cluster"
	"github.com/lotse/lotse/internal/manager"
	"github.com/lotse/lotse/internal/pki"
)

// actingAs is a client of the management API acting as user, through
// impersonation by the admin: RBAC and admission see user, as they would
// if user had signed in.
func actingAs(t *testing.T, user string) client.Client {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", env.kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// kubeconfigActingAs is the management kubeconfig acting as user, for the CLI.
func kubeconfigActingAs(t *testing.T, user string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(env.kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, auth := range cfg.AuthInfos {
		auth.Impersonate = user
	}
	path := filepath.Join(t.TempDir(), user+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func projectCLI(t *testing.T, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	return lotseCLI(t, append(args, "--kubeconfig", kubeconfig)...)
}

func expectForbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s: want forbidden, got %v", what, err)
	}
}

func expectDenied(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: admitted", what)
		return
	}
	t.Logf("%s: %v", what, err)
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: the refusal %q does not say %q", what, err, p)
		}
	}
}

func workerless(namespace, name string) *lotsev1.Cluster {
	return &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
}

// TestProjects: projects isolate their members from each other, quotas
// refuse what does not fit and say which quota, owners manage members but
// not quotas, a project with clusters cannot be deleted, and members get
// short-lived kubeconfigs while an expired one is refused.
func TestProjects(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	admin := mgmtClient(t)
	mustCLI(t, "project", "create", "acme", "--member", "alice=owner", "--member", "bob=viewer",
		"--max-clusters", "1", "--max-nodes", "2", "--max-control-plane-replicas", "1", "--wait")
	mustCLI(t, "project", "create", "globex", "--member", "carol=admin", "--wait")
	t.Cleanup(func() {
		for _, ns := range []string{"project-acme", "project-globex"} {
			_ = admin.DeleteAllOf(context.Background(), &lotsev1.Cluster{}, client.InNamespace(ns))
		}
		waitFor(t, 3*time.Minute, "the projects' clusters gone", func() (bool, error) {
			list := &lotsev1.ClusterList{}
			if err := admin.List(context.Background(), list, client.InNamespace("project-acme")); err != nil {
				return false, err
			}
			return len(list.Items) == 0, nil
		})
		for _, p := range []string{"acme", "globex"} {
			_ = admin.Delete(context.Background(), &lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: p}})
		}
	})
	alice, bob, carol := actingAs(t, "alice"), actingAs(t, "bob"), actingAs(t, "carol")
	dryRun := client.DryRunAll

	// Quota: the first cluster fits, the second is one too many.
	if err := alice.Create(ctx, workerless("project-acme", "web")); err != nil {
		t.Fatalf("owner creates the project's first cluster: %v", err)
	}
	err := alice.Create(ctx, workerless("project-acme", "api"))
	expectDenied(t, "a second cluster past a quota of one", err, "project acme", "spec.quota.clusters: 2 used of 1", "web")
	changeWeb := func(change func(*lotsev1.Cluster)) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			web := &lotsev1.Cluster{}
			if err := alice.Get(ctx, client.ObjectKey{Namespace: "project-acme", Name: "web"}, web); err != nil {
				return err
			}
			change(web)
			return alice.Update(ctx, web, dryRun)
		})
	}
	err = changeWeb(func(c *lotsev1.Cluster) {
		c.Spec.Workers = []lotsev1.WorkerPool{{Name: "pool", Minimum: 1, Maximum: 3, MaxSurge: 1}}
	})
	expectDenied(t, "a pool past the nodes quota", err, "spec.quota.nodes: 3 used of 2")
	if err := changeWeb(func(c *lotsev1.Cluster) {
		c.Spec.Workers = []lotsev1.WorkerPool{{Name: "pool", Minimum: 1, Maximum: 2, MaxSurge: 1}}
	}); err != nil {
		t.Errorf("a pool within the nodes quota: %v", err)
	}
	err = changeWeb(func(c *lotsev1.Cluster) { c.Spec.ControlPlane.HighAvailability = true })
	expectDenied(t, "HA past the control-plane replicas quota", err, "spec.quota.controlPlaneReplicas: 3 used of 1")
	// A project without quota takes what it is given (dry run: no
	// control plane starts).
	roomy := workerless("project-globex", "roomy")
	roomy.Spec.Workers = []lotsev1.WorkerPool{{Name: "pool", Minimum: 1, Maximum: 50, MaxSurge: 1}}
	if err := carol.Create(ctx, roomy, dryRun); err != nil {
		t.Errorf("admin of a project without quota: %v", err)
	}

	// Isolation.
	for _, tc := range []struct {
		who  string
		c    client.Client
		what string
		err  error
	}{
		{"alice", alice, "list globex's clusters", alice.List(ctx, &lotsev1.ClusterList{}, client.InNamespace("project-globex"))},
		{"alice", alice, "list globex's secrets", alice.List(ctx, &corev1.SecretList{}, client.InNamespace("project-globex"))},
		{"alice", alice, "read project globex", alice.Get(ctx, client.ObjectKey{Name: "globex"}, &lotsev1.Project{})},
		{"alice", alice, "create a cluster outside her project", alice.Create(ctx, workerless("default", "stray"), dryRun)},
		{"alice", alice, "list every project", alice.List(ctx, &lotsev1.ProjectList{})},
		{"carol", carol, "list acme's clusters", carol.List(ctx, &lotsev1.ClusterList{}, client.InNamespace("project-acme"))},
		{"carol", carol, "read web's kubeconfig", carol.Get(ctx, client.ObjectKey{Namespace: "project-acme", Name: clustercontroller.KubeconfigSecretName("web")}, &corev1.Secret{})},
		{"carol", carol, "delete web", carol.Delete(ctx, workerless("project-acme", "web"), dryRun)},
		{"bob", bob, "read web's kubeconfig", bob.Get(ctx, client.ObjectKey{Namespace: "project-acme", Name: clustercontroller.KubeconfigSecretName("web")}, &corev1.Secret{})},
		{"bob", bob, "create a cluster as a viewer", bob.Create(ctx, workerless("project-acme", "mine"), dryRun)},
		{"bob", bob, "delete web as a viewer", bob.Delete(ctx, workerless("project-acme", "web"), dryRun)},
	} {
		expectForbidden(t, tc.who+" may not "+tc.what, tc.err)
	}
	if err := bob.List(ctx, &lotsev1.ClusterList{}, client.InNamespace("project-acme")); err != nil {
		t.Errorf("a viewer lists the project's clusters: %v", err)
	}
	if err := bob.Get(ctx, client.ObjectKey{Name: "acme"}, &lotsev1.Project{}); err != nil {
		t.Errorf("a viewer reads the project: %v", err)
	}
	if err := alice.List(ctx, &corev1.SecretList{}, client.InNamespace("project-acme")); err != nil {
		t.Errorf("an owner lists the project's secrets: %v", err)
	}

	// Owners manage members, not quotas; viewers manage nothing.
	aliceKubeconfig := kubeconfigActingAs(t, "alice")
	if out, err := projectCLI(t, aliceKubeconfig, "project", "member", "set", "acme", "dave=viewer"); err != nil {
		t.Errorf("an owner adds a member: %v\n%s", err, out)
	}
	out, err := projectCLI(t, aliceKubeconfig, "project", "quota", "acme", "--max-clusters", "10")
	if err == nil || !strings.Contains(out, "set by the provider") {
		t.Errorf("an owner raised her own quota: %v\n%s", err, out)
	}
	t.Logf("an owner raises her own quota: %s", out)
	if out, err := projectCLI(t, kubeconfigActingAs(t, "bob"), "project", "member", "set", "acme", "bob=owner"); err == nil || !strings.Contains(out, "forbidden") {
		t.Errorf("a viewer made himself owner: %v\n%s", err, out)
	}
	dave := actingAs(t, "dave")
	waitFor(t, time.Minute, "the new member dave sees the project's clusters", func() (bool, error) {
		err := dave.List(ctx, &lotsev1.ClusterList{}, client.InNamespace("project-acme"))
		return err == nil, err
	})

	// A project with clusters cannot be deleted.
	if out, err := lotseCLI(t, "project", "delete", "acme"); err == nil || !strings.Contains(out, "still has clusters (web)") {
		t.Errorf("delete of a project with a cluster: %v\n%s", err, out)
	}

	// Kubeconfigs for members: an owner gets a short-lived one from the
	// CLI, a viewer gets none; the cluster refuses an expired certificate.
	var web *lotsev1.Cluster
	waitFor(t, 3*time.Minute, "cluster web Ready", func() (bool, error) {
		web = &lotsev1.Cluster{}
		if err := admin.Get(ctx, client.ObjectKey{Namespace: "project-acme", Name: "web"}, web); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(web.Status.Conditions, lotsev1.ConditionReady), nil
	})
	// What tenants' roles would reach through objects they may write, but
	// only the provider may set, is refused with the reason.
	err = changeWeb(func(c *lotsev1.Cluster) { c.Spec.Backup = &lotsev1.BackupSpec{Directory: "/etc/lotse-stolen"} })
	expectDenied(t, "a backup directory on the manager's host", err, "spec.backup.directory and spec.backup.s3", "set by the provider")
	kubeconfigSecret := &corev1.Secret{}
	if err := alice.Get(ctx, client.ObjectKey{Namespace: "project-acme", Name: clustercontroller.KubeconfigSecretName("web")}, kubeconfigSecret); err != nil {
		t.Fatalf("an owner reads the kubeconfig Secret: %v", err)
	}
	kubeconfigSecret.Data["kubeconfig"] = []byte("users: [{name: x, user: {exec: {command: /bin/sh}}}]")
	expectDenied(t, "an owner rewrites the kubeconfig Secret", alice.Update(ctx, kubeconfigSecret, dryRun), "is written by Lotse")
	// A kubeconfig Secret deleted and planted again without Lotse's label
	// is not handed out, and Lotse puts its own back.
	// (Lotse may put its own back between the delete and the create:
	// then again.)
	for attempt := 0; ; attempt++ {
		old := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "project-acme", Name: clustercontroller.KubeconfigSecretName("web")}}
		if err := alice.Delete(ctx, old); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("an owner deletes the kubeconfig Secret: %v", err)
		}
		planted := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "project-acme", Name: clustercontroller.KubeconfigSecretName("web")},
			Data: map[string][]byte{"kubeconfig": []byte("users: [{name: x, user: {exec: {command: /bin/sh}}}]")}}
		err := alice.Create(ctx, planted)
		if err == nil {
			break
		}
		if !apierrors.IsAlreadyExists(err) || attempt == 10 {
			t.Fatalf("plant a Secret: %v", err)
		}
	}
	// The CLI refuses the planted one, or finds none (Lotse removed it and
	// is about to write its own), or Lotse has put its own back and the CLI
	// hands out that: never the planted content.
	out, err = projectCLI(t, kubeconfigActingAs(t, "alice"), "cluster", "kubeconfig", "-p", "acme", "web")
	if (err == nil && strings.Contains(out, "exec")) ||
		(err != nil && !strings.Contains(out, "not the kubeconfig Lotse wrote") && !strings.Contains(out, "no kubeconfig for cluster")) {
		t.Errorf("the kubeconfig after a planted Secret: %v\n%s", err, out)
	}
	waitFor(t, 2*time.Minute, "Lotse's kubeconfig Secret back", func() (bool, error) {
		s := &corev1.Secret{}
		if err := admin.Get(ctx, client.ObjectKey{Namespace: "project-acme", Name: clustercontroller.KubeconfigSecretName("web")}, s); err != nil {
			return false, err
		}
		return clustercontroller.IsClusterKubeconfig(s, "web") && !strings.Contains(string(s.Data["kubeconfig"]), "exec"), nil
	})
	tokenSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "project-acme", Name: "minted",
		Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}}, Type: corev1.SecretTypeServiceAccountToken}
	expectDenied(t, "an owner mints a service-account token", alice.Create(ctx, tokenSecret, dryRun), "mints a token")
	zoned := &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: "project-globex", Name: "shop"}}
	zoned.Spec.DNS.Zone = "shop.example.com"
	expectDenied(t, "an admin picks a fleet's DNS zone", carol.Create(ctx, zoned, dryRun), "spec.dns.zone", "set by the provider")
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := &lotsev1.Project{}
		if err := alice.Get(ctx, client.ObjectKey{Name: "acme"}, p); err != nil {
			return err
		}
		p.Finalizers = append(p.Finalizers, "example.com/hold")
		return alice.Update(ctx, p, dryRun)
	})
	expectDenied(t, "an owner changes the project's finalizers", err, "may change spec.members and spec.description")

	short := filepath.Join(t.TempDir(), "alice-web.kubeconfig")
	if out, err := projectCLI(t, aliceKubeconfig, "cluster", "kubeconfig", "-p", "acme", "web", "--expires", "1h", "--user", "alice", "--output-file", short); err != nil {
		t.Fatalf("an owner's short-lived kubeconfig: %v\n%s", err, out)
	}
	if until := time.Until(kubeconfigCertNotAfter(t, short)); until > time.Hour || until < 50*time.Minute {
		t.Errorf("the owner's kubeconfig is valid for %s, want about 1h", until)
	}
	if out, err := projectCLI(t, kubeconfigActingAs(t, "bob"), "cluster", "kubeconfig", "-p", "acme", "web", "--expires", "1h"); err == nil || !strings.Contains(out, "forbidden") {
		t.Errorf("a viewer got a kubeconfig: %v\n%s", err, out)
	}
	// A kubeconfig in one's own name, asked for through a
	// KubeconfigRequest: a viewer gets the view role, not admin.
	bobKubeconfig := kubeconfigActingAs(t, "bob")
	viewer := filepath.Join(t.TempDir(), "bob-web.kubeconfig")
	if out, err := projectCLI(t, bobKubeconfig, "cluster", "kubeconfig", "-p", "acme", "web", "--expires", "1h", "--role", "viewer", "--output-file", viewer); err != nil {
		t.Fatalf("a viewer asks for a viewer kubeconfig: %v\n%s", err, out)
	}
	if b, err := exec.Command(kubectlPath(t), "--kubeconfig", viewer, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").CombinedOutput(); err != nil || string(b) != "bob" {
		t.Errorf("the viewer kubeconfig is for %q (%v), want bob", b, err)
	}
	if b, err := exec.Command(kubectlPath(t), "--kubeconfig", viewer, "get", "namespaces").CombinedOutput(); err != nil {
		t.Errorf("the viewer kubeconfig cannot list namespaces: %v\n%s", err, b)
	}
	if b, err := exec.Command(kubectlPath(t), "--kubeconfig", viewer, "create", "namespace", "bobs").CombinedOutput(); err == nil || !strings.Contains(string(b), "forbidden") {
		t.Errorf("the viewer kubeconfig created a namespace: %v\n%s", err, b)
	}
	if out, err := projectCLI(t, bobKubeconfig, "cluster", "kubeconfig", "-p", "acme", "web", "--expires", "1h", "--role", "admin"); err == nil || !strings.Contains(out, "may ask for role viewer") {
		t.Errorf("a viewer asked for an admin kubeconfig: %v\n%s", err, out)
	}
	forged := &lotsev1.KubeconfigRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "project-acme", Name: "forged"},
		Spec: lotsev1.KubeconfigRequestSpec{Cluster: "web", User: "alice", Role: lotsev1.KubeconfigViewer, ExpirationSeconds: 600, CertificateSigningRequest: "x"}}
	expectDenied(t, "a kubeconfig in someone else's name", bob.Create(ctx, forged, dryRun), "a kubeconfig is for who asks for it")

	ca, err := pki.ClusterPKI{Dir: filepath.Join(env.stateDir, "clusters", "project-acme", "web", "pki")}.CA()
	if err != nil {
		t.Fatal(err)
	}
	status := func(notAfter time.Time) int {
		pair, err := ca.Issue(pki.CertSpec{CommonName: "eve", Organization: []string{"lotse:cluster-admins"}, Client: true, NotAfter: notAfter})
		if err != nil {
			t.Fatal(err)
		}
		key, err := pki.KeyPEM(pair.Key)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &rest.Config{Host: web.Status.Endpoint, TLSClientConfig: rest.TLSClientConfig{
			CAData: pki.CertPEM(ca.Cert), CertData: pki.CertPEM(pair.Cert), KeyData: key,
		}}
		hc, err := rest.HTTPClientFor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Get(cfg.Host + "/api")
		if err != nil {
			t.Fatalf("GET /api: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := status(time.Now().Add(time.Hour)); code != http.StatusOK {
		t.Errorf("a valid certificate of the cluster's CA: HTTP %d", code)
	}
	if code := status(time.Now().Add(-time.Minute)); code != http.StatusUnauthorized {
		t.Errorf("an expired certificate: HTTP %d, want 401", code)
	}

	// Once its clusters are gone, the project goes, with its namespace.
	if err := admin.Delete(ctx, workerless("project-acme", "web")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "cluster web gone", func() (bool, error) {
		err := admin.Get(ctx, client.ObjectKey{Namespace: "project-acme", Name: "web"}, &lotsev1.Cluster{})
		return apierrors.IsNotFound(err), nil
	})
	mustCLI(t, "project", "delete", "acme", "--wait")
	waitFor(t, 2*time.Minute, "namespace project-acme gone", func() (bool, error) {
		err := admin.Get(ctx, client.ObjectKey{Name: "project-acme"}, &corev1.Namespace{})
		return apierrors.IsNotFound(err), nil
	})
	if _, err := os.Stat(filepath.Join(env.stateDir, "clusters", "project-acme", "web")); !os.IsNotExist(err) {
		t.Errorf("cluster web's directory is left: %v", err)
	}
}
