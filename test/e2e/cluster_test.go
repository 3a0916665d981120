package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/ports"
)

// TestClusterLifecycle: create a cluster with the CLI, use it with kubectl
// and client-go, check that Secrets are encrypted in etcd, delete it and
// check that nothing is left.
func TestClusterLifecycle(t *testing.T) {
	parallel(t)
	const name = "life"
	out := mustCLI(t, "cluster", "create", name, "--wait", "--timeout", scaled(3*time.Minute))
	for _, task := range []string{"pki", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubeconfig-secret"} {
		if !strings.Contains(out, task) {
			t.Errorf("--wait output does not show task %s:\n%s", task, out)
		}
	}
	mc := mgmtClient(t)
	cl := getCluster(t, mc, name)
	if cl.Status.Phase != "Running" || cl.Status.KubernetesVersion == "" || cl.Status.LastOperation == nil || cl.Status.LastOperation.Progress != 100 {
		t.Errorf("unexpected status after --wait: %+v", cl.Status)
	}

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	mustCLI(t, "cluster", "kubeconfig", name, "--output-file", kubeconfig)

	// kubectl works with the kubeconfig.
	kubectl := exec.Command(kubectlPath(t), "--kubeconfig", kubeconfig, "create", "namespace", "team-a")
	if b, err := kubectl.CombinedOutput(); err != nil {
		t.Fatalf("kubectl create namespace: %v\n%s", err, b)
	}

	// A short-lived kubeconfig for a person: the cluster signs it for the
	// user and group asked, it expires as asked, and its rights are its
	// group's (the admin group's are cluster-admin; another group's none).
	alice := filepath.Join(t.TempDir(), "alice.kubeconfig")
	mustCLI(t, "cluster", "kubeconfig", name, "--expires", "1h", "--user", "alice", "--output-file", alice)
	whoami, err := exec.Command(kubectlPath(t), "--kubeconfig", alice, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").CombinedOutput()
	if err != nil || string(whoami) != "alice" {
		t.Errorf("kubectl auth whoami with the short-lived kubeconfig: %v %s", err, whoami)
	}
	if b, err := exec.Command(kubectlPath(t), "--kubeconfig", alice, "get", "namespace", "team-a").CombinedOutput(); err != nil {
		t.Errorf("the admin group's kubeconfig cannot read a namespace: %v\n%s", err, b)
	}
	if until := time.Until(kubeconfigCertNotAfter(t, alice)); until > time.Hour || until < 50*time.Minute {
		t.Errorf("the short-lived certificate is valid for %s, want 1h", until)
	}
	bob := filepath.Join(t.TempDir(), "bob.kubeconfig")
	mustCLI(t, "cluster", "kubeconfig", name, "--expires", "10m", "--user", "bob", "--group", "viewers", "--output-file", bob)
	if b, err := exec.Command(kubectlPath(t), "--kubeconfig", bob, "get", "namespaces").CombinedOutput(); err == nil || !strings.Contains(string(b), "forbidden") {
		t.Errorf("a group without bindings listed namespaces: %v\n%s", err, b)
	}
	if out, err := lotseCLI(t, "cluster", "kubeconfig", name, "--expires", "1h", "--group", "system:masters"); err == nil || !strings.Contains(out, "lotse:cluster-admins") {
		t.Errorf("system:masters was not refused with a pointer to the admin group: %v\n%s", err, out)
	}

	// client-go works too: a Deployment object and a Secret.
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()

	// Without nodes too, the kubernetes Service has Endpoints and an
	// EndpointSlice, and they agree.
	eps, err := cs.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Endpoints default/kubernetes in a cluster without nodes: %v", err)
	}
	slice, err := cs.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("EndpointSlice default/kubernetes in a cluster without nodes: %v", err)
	}
	if err := endpointsAgree(eps, slice); err != nil {
		t.Error(err)
	}

	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "example.invalid/web:1"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("team-a").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	// The controller-manager acts on it: a ReplicaSet appears.
	waitFor(t, time.Minute, "a ReplicaSet for the Deployment", func() (bool, error) {
		rs, err := cs.AppsV1().ReplicaSets("team-a").List(ctx, metav1.ListOptions{})
		return err == nil && len(rs.Items) == 1, err
	})
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-password", Namespace: "team-a"}, StringData: map[string]string{"password": "hunter2"}}
	if _, err := cs.CoreV1().Secrets("team-a").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create secret: %v", err)
	}

	// The raw etcd value is encrypted with aescbc.
	raw := readEtcdRaw(t, name, "/registry/secrets/team-a/db-password")
	if !strings.HasPrefix(raw, "k8s:enc:aescbc:v1:") {
		t.Errorf("secret in etcd is not aescbc-encrypted; starts with %q", raw[:min(len(raw), 40)])
	}
	if strings.Contains(raw, "hunter2") {
		t.Error("secret value is readable in etcd")
	}

	// Delete: nothing is left (processes, ports, directory, kubeconfig Secret).
	layout := readLayout(t, name)
	mustCLI(t, "cluster", "delete", name, "--wait", "--timeout", "2m")
	if left := clusterProcesses(name); len(left) > 0 {
		t.Errorf("processes left after delete: %+v", left)
	}
	for _, p := range append(append(append(layout.EtcdClient, layout.EtcdPeer...), layout.APIServer...), append(layout.ControllerManager, layout.Scheduler...)...) {
		if !ports.Free(p) {
			t.Errorf("port %d still in use after delete", p)
		}
	}
	if _, err := os.Stat(clusterDir(name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory %s still exists (err=%v)", clusterDir(name), err)
	}
	if out, err := lotseCLI(t, "cluster", "kubeconfig", name); err == nil {
		t.Errorf("kubeconfig still served after delete: %s", out)
	}
}

func readLayout(t testing.TB, name string) process.Layout {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(clusterDir(name), "ports.json"))
	if err != nil {
		t.Fatal(err)
	}
	var l process.Layout
	if err := json.Unmarshal(data, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// readEtcdRaw reads a key straight from the cluster's etcd, bypassing the API.
func readEtcdRaw(t testing.TB, name, key string) string {
	t.Helper()
	c := etcdClient(t, name)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, key)
	if err != nil {
		t.Fatalf("etcd get %s: %v", key, err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("etcd key %s: %d values", key, len(resp.Kvs))
	}
	return string(resp.Kvs[0].Value)
}

// etcdClient connects to a cluster's etcd members with the admin
// certificate.
func etcdClient(t testing.TB, name string) *clientv3.Client {
	t.Helper()
	l := readLayout(t, name)
	p := pki.ClusterPKI{Dir: filepath.Join(clusterDir(name), "pki")}
	cert, err := tls.LoadX509KeyPair(p.Cert(pki.EtcdAdminName), p.Key(pki.EtcdAdminName))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(p.Cert(pki.EtcdCAName))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	var endpoints []string
	for _, port := range l.EtcdClient {
		endpoints = append(endpoints, "https://127.0.0.1:"+strconv.Itoa(port))
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// kubeconfigCertNotAfter is when the client certificate of a kubeconfig
// expires.
func kubeconfigCertNotAfter(t testing.TB, path string) time.Time {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.AuthInfos {
		block, _ := pem.Decode(a.ClientCertificateData)
		if block == nil {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert.NotAfter
	}
	t.Fatalf("%s holds no client certificate", path)
	return time.Time{}
}
