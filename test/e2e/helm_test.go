package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controlplane/seed"
	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/machine/local"
	"github.com/lotse/lotse/internal/manager"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/supervisor"
)

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// prebuildHelm starts building Helm while a test waits for its cluster.
func prebuildHelm() { go helmOnce.Do(buildHelm) }

// helmBinary builds Helm from its module (hack/helm/go.mod) once per run.
func helmBinary(t testing.TB) string {
	t.Helper()
	helmOnce.Do(buildHelm)
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

func buildHelm() {
	root, err := filepath.Abs("../..")
	if err != nil {
		helmErr = err
		return
	}
	dir := filepath.Join(releases.DefaultCacheDir(), "tools")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		helmErr = err
		return
	}
	helmPath = filepath.Join(dir, "helm")
	cmd := exec.Command("go", "build", "-modfile=hack/helm/go.mod", "-o", helmPath, "helm.sh/helm/v3/cmd/helm")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		helmErr = fmt.Errorf("build helm: %v\n%s", err, out)
	}
}

func runHelm(t testing.TB, kubeconfig string, args ...string) string {
	t.Helper()
	cmd := exec.Command(helmBinary(t), append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// loadManagerImage builds the manager's image (the lotse binary under
// test and the default release) and imports it into the machines of a
// Lotse cluster of this host, as `lotse image manager` and a node bundle
// would, but only there: the other tests' nodes do not need 600 MB more.
func loadManagerImage(t testing.TB, cluster string) string {
	t.Helper()
	cache := releases.DefaultCacheDir()
	store := releases.NewStore(cache)
	rel := releases.Default()
	if _, err := store.Binaries(rel); err != nil {
		t.Fatal(err)
	}
	// In a fixed order: the image's content and digest follow it.
	dirs := slices.Sorted(maps.Keys(store.Dirs(rel)))
	abs, err := filepath.Abs(cache)
	if err != nil {
		t.Fatal(err)
	}
	return importImage(t, cluster, images.Manager("e2e", env.binary, abs, dirs))
}

// importImage builds an image and imports it into the machines of one
// Lotse cluster of this host only (not into the node bundle every node
// of the run loads); it returns the image's reference.
func importImage(t testing.TB, cluster string, img images.Image) string {
	t.Helper()
	ctx := context.Background()
	b := &images.Builder{CacheDir: releases.DefaultCacheDir()}
	tar, err := b.Ensure(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	stamp, err := b.Stamp(img)
	if err != nil {
		t.Fatal(err)
	}
	p := &local.Provider{StateDir: env.stateDir, Supervisor: supervisor.New(env.owner, supervisor.Options{})}
	n, err := p.ImportImages(ctx, clusterref.Ref{Namespace: "default", Name: cluster}, []local.ImportedImage{{Tarball: tar, Ref: img.Ref(), ID: stamp.ImageID}})
	if err != nil || n == 0 {
		t.Fatalf("import %s into %s: %d machines, %v", img.Ref(), cluster, n, err)
	}
	return img.Ref()
}

// helmManager: the chart installed into a Lotse cluster with nodes starts
// two managers (one leading) that make that cluster their seed and create
// a cluster there, its control plane as pods running the manager's image.
// The leader's pod deleted, the other takes the control plane over from
// the state kept in the seed (same CA, no new control plane), and
// `helm upgrade` rolls the managers.
func helmManager(t *testing.T, host string) {
	ctx := context.Background()
	const inner, release, ns = "inner", "lotse", "lotse-system"
	start := time.Now()
	// Where the time goes: each step's time since the start, for a slow run.
	step := func(what string) { t.Logf("%s after %s", what, time.Since(start).Round(time.Second)) }
	ref := loadManagerImage(t, host)
	step("manager image built and imported")
	repo, tag, _ := strings.Cut(ref[strings.LastIndex(ref, "/")+1:], ":")
	repo = ref[:strings.LastIndex(ref, "/")+1] + repo

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	mustCLI(t, "cluster", "kubeconfig", host, "--output-file", kubeconfig)
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	mc, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	chart, err := filepath.Abs("../../charts/lotse")
	if err != nil {
		t.Fatal(err)
	}
	// Credentials the control planes' pods pull the manager's image with
	// (never used: the image is on the nodes, IfNotPresent).
	pullCreds := []byte(`{"auths":{"` + repo[:strings.Index(repo, "/")] + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("puller:pw")) + `"}}}`)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "control-plane-pull"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: pullCreds}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	runHelm(t, kubeconfig, "install", release, chart, "-n", ns, "--create-namespace",
		"--set", "image.repository="+repo, "--set", "image.tag="+tag,
		"--set", "controlPlanes.imagePullSecret=control-plane-pull",
		// An address in the seed's node network: the managers' pods there
		// reach it, and so does this host.
		"--set-string", `seed.apiServerService.annotations.lb\.lotse\.dev/internal=true`,
		"--wait", "--timeout", scaled(10*time.Minute))
	step("chart installed")
	t.Cleanup(func() {
		// What the managers made goes while they run: the cluster, then
		// the seed (whose finalizer they remove).
		_ = mc.Delete(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: inner}})
		deadline := time.Now().Add(5 * time.Minute)
		for time.Now().Before(deadline) {
			if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: inner}, &lotsev1.Cluster{}); apierrors.IsNotFound(err) {
				break
			}
			time.Sleep(time.Second)
		}
		_ = mc.Delete(ctx, &lotsev1.Seed{ObjectMeta: metav1.ObjectMeta{Name: "management"}})
		cmd := exec.Command(helmBinary(t), "--kubeconfig", kubeconfig, "uninstall", release, "-n", ns, "--wait")
		_ = cmd.Run()
		_ = cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, "lotse", metav1.DeleteOptions{})
	})

	deployment := func() *appsv1.Deployment {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, release, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := deployment(); d.Status.ReadyReplicas != 2 {
		t.Fatalf("the chart's managers: %d of 2 ready", d.Status.ReadyReplicas)
	}
	leader := func() string {
		l, err := cs.CoordinationV1().Leases(ns).Get(ctx, "lotse-manager", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return holderPod(l)
	}
	waitFor(t, 2*time.Minute, "a leading manager", func() (bool, error) { return leader() != "", nil })
	waitFor(t, 2*time.Minute, "seed management Ready", func() (bool, error) {
		s := &lotsev1.Seed{}
		if err := mc.Get(ctx, client.ObjectKey{Name: "management"}, s); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(s.Status.Conditions, lotsev1.ConditionSeedReady), nil
	})

	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: inner, Namespace: "default"}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	step("seed management Ready")
	cl := waitClusterReady(t, mc, inner, 10*time.Minute)
	step("cluster inner Ready")
	if cl.Status.Seed != "management" {
		t.Fatalf("status.seed = %q, want management", cl.Status.Seed)
	}
	cpNS := innerNamespace(t, cs, inner)
	pods, err := cs.CoreV1().Pods(cpNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	running := map[string]bool{}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.Spec.Containers[0].Image == ref {
			running[p.Labels[seed.LabelComponent]] = true
		}
		if len(p.Spec.ImagePullSecrets) != 1 || p.Spec.ImagePullSecrets[0].Name != "image-pull" {
			t.Errorf("pod %s pulls with %v, want the Secret image-pull", p.Name, p.Spec.ImagePullSecrets)
		}
	}
	if s, err := cs.CoreV1().Secrets(cpNS).Get(ctx, "image-pull", metav1.GetOptions{}); err != nil || s.Type != corev1.SecretTypeDockerConfigJson || !bytes.Equal(s.Data[corev1.DockerConfigJsonKey], pullCreds) {
		t.Errorf("the control plane's image pull Secret: %v (err %v), want the chart's credentials", s, err)
	}
	for _, want := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if !running[want] {
			t.Errorf("no running %s pod of the manager's image in %s", want, cpNS)
		}
	}
	before := kubeconfigSecret(t, cs, inner)
	innerAPI(t, cs, cpNS, before)

	t.Run("the webhook behind its Service enforces project quotas", func(t *testing.T) {
		p := &lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: "full"}}
		p.Spec.Quota = &lotsev1.ProjectQuota{Clusters: ptr.To(int32(0))}
		if err := mc.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mc.Delete(context.Background(), p) })
		var pns string
		waitFor(t, 2*time.Minute, "project full's namespace", func() (bool, error) {
			got := &lotsev1.Project{}
			if err := mc.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
				return false, err
			}
			pns = got.Status.Namespace
			if pns == "" {
				return false, nil
			}
			_, err := cs.CoreV1().Namespaces().Get(ctx, pns, metav1.GetOptions{})
			return err == nil, err
		})
		// The configuration is written by the leader once it leads.
		waitFor(t, 2*time.Minute, "a cluster past the quota refused, naming it", func() (bool, error) {
			err := mc.Create(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "past-quota", Namespace: pns}}, client.DryRunAll)
			if err == nil {
				return false, fmt.Errorf("created past a quota of 0 clusters")
			}
			return strings.Contains(err.Error(), "spec.quota.clusters"), err
		})
	})

	t.Run("a new leader takes the control plane over", func(t *testing.T) {
		old := leader()
		if err := cs.CoreV1().Pods(ns).Delete(ctx, old, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 3*time.Minute, "another manager leading", func() (bool, error) {
			now := leader()
			return now != "" && now != old, nil
		})
		// Evidence from the new leader: the kubeconfig Secret, deleted
		// now, written again, with the CA the control plane has had.
		s, err := cs.CoreV1().Secrets("default").Get(ctx, inner+"-kubeconfig", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.CoreV1().Secrets("default").Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		var again []byte
		waitFor(t, 3*time.Minute, "the kubeconfig Secret written by the new leader", func() (bool, error) {
			got, err := cs.CoreV1().Secrets("default").Get(ctx, s.Name, metav1.GetOptions{})
			if err != nil {
				return false, client.IgnoreNotFound(err)
			}
			again = got.Data["kubeconfig"]
			return got.UID != s.UID, nil
		})
		if !bytes.Equal(caOf(t, again), caOf(t, before)) {
			t.Fatal("the new leader wrote a kubeconfig with another CA: it made a new control plane instead of taking the old one over")
		}
		waitClusterReady(t, mc, inner, 3*time.Minute)
		innerAPI(t, cs, cpNS, again)
	})

	t.Run("helm upgrade rolls the managers", func(t *testing.T) {
		gen := deployment().Generation
		runHelm(t, kubeconfig, "upgrade", release, chart, "-n", ns, "--reuse-values",
			"--set", "podAnnotations.upgraded=yes", "--wait", "--timeout", scaled(10*time.Minute))
		d := deployment()
		if d.Generation == gen || d.Spec.Template.Annotations["upgraded"] != "yes" || d.Status.UpdatedReplicas != 2 || d.Status.ReadyReplicas != 2 {
			t.Fatalf("after the upgrade: generation %d (was %d), %d updated, %d ready", d.Generation, gen, d.Status.UpdatedReplicas, d.Status.ReadyReplicas)
		}
		waitClusterReady(t, mc, inner, 3*time.Minute)
	})

	t.Run("deleting the cluster removes its control plane from the seed", func(t *testing.T) {
		if err := mc.Delete(ctx, &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: inner}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Minute, "cluster "+inner+" gone", func() (bool, error) {
			err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: inner}, &lotsev1.Cluster{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		waitFor(t, 3*time.Minute, "namespace "+cpNS+" gone", func() (bool, error) {
			_, err := cs.CoreV1().Namespaces().Get(ctx, cpNS, metav1.GetOptions{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
	})

	t.Run("helm uninstall removes the managers and their webhook configuration", func(t *testing.T) {
		if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "lotse", metav1.GetOptions{}); err != nil {
			t.Fatalf("the managers' webhook configuration before the uninstall: %v", err)
		}
		if err := mc.Delete(ctx, &lotsev1.Seed{ObjectMeta: metav1.ObjectMeta{Name: "management"}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, "seed management gone", func() (bool, error) {
			err := mc.Get(ctx, client.ObjectKey{Name: "management"}, &lotsev1.Seed{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		runHelm(t, kubeconfig, "uninstall", release, "-n", ns, "--wait", "--timeout", scaled(5*time.Minute))
		waitFor(t, 2*time.Minute, "the webhook configuration gone with the manager's ClusterRole", func() (bool, error) {
			_, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "lotse", metav1.GetOptions{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil || len(pods.Items) > 0 {
			for _, p := range pods.Items {
				if p.DeletionTimestamp == nil {
					t.Errorf("pod %s left after the uninstall (%v)", p.Name, err)
				}
			}
		}
	})
}

// holderPod is the pod name in a controller-runtime leader lease
// ("POD_uuid").
func holderPod(l *coordinationv1.Lease) string {
	id := *l.Spec.HolderIdentity
	if i := strings.LastIndex(id, "_"); i > 0 {
		return id[:i]
	}
	return id
}

// innerNamespace finds the namespace of a control plane the chart's
// manager made in the seed.
func innerNamespace(t testing.TB, cs kubernetes.Interface, name string) string {
	t.Helper()
	list, err := cs.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{LabelSelector: seed.LabelPartOf + "=lotse-control-plane"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range list.Items {
		if strings.HasPrefix(n.Name, "lotse-cp-default-"+name+"-") {
			return n.Name
		}
	}
	t.Fatalf("no namespace of control plane %s in the seed", name)
	return ""
}

func kubeconfigSecret(t testing.TB, cs kubernetes.Interface, name string) []byte {
	t.Helper()
	s, err := cs.CoreV1().Secrets("default").Get(context.Background(), name+"-kubeconfig", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Data["kubeconfig"]
}

func caOf(t testing.TB, kubeconfig []byte) []byte {
	t.Helper()
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		return c.CertificateAuthorityData
	}
	t.Fatal("kubeconfig without a cluster")
	return nil
}

// innerAPI reaches the control plane with the admin kubeconfig the
// managers wrote: it names the address of the seed's load balancer (the
// chart's default), which this host and the seed's pods reach alike.
func innerAPI(t testing.TB, cs kubernetes.Interface, namespace string, kubeconfig []byte) {
	t.Helper()
	ctx := context.Background()
	svc, err := cs.CoreV1().Services(namespace).Get(ctx, "kube-apiserver", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Status.LoadBalancer.Ingress) == 0 || cfg.Host != "https://"+svc.Status.LoadBalancer.Ingress[0].IP+":6443" {
		t.Fatalf("the kubeconfig's server is %s; the API's Service is %s with load-balancer ingress %+v", cfg.Host, svc.Spec.Type, svc.Status.LoadBalancer.Ingress)
	}
	inner := kubernetes.NewForConfigOrDie(cfg)
	waitFor(t, 2*time.Minute, "the hosted API through the seed's load balancer "+cfg.Host, func() (bool, error) {
		_, err := inner.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
		return err == nil, err
	})
}
