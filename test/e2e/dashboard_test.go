package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/ports"
)

// chromiumPath is Debian's Chromium, which hack/install-deps.sh installs.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Chromium is not installed; run hack/install-deps.sh (apt package chromium)")
	return ""
}

// startDashboard runs `lotse dashboard` on an allocated port until the test ends.
func startDashboard(t *testing.T) string {
	t.Helper()
	port, err := ports.Allocate(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port[0])
	cmd := exec.Command(env.binary, "dashboard", "--address", addr, "--kubeconfig", env.kubeconfig())
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("lotse dashboard:\n%s", out.String())
		}
	})
	url := "http://" + addr
	waitFor(t, 2*time.Minute, "the dashboard serving", func() (bool, error) {
		resp, err := http.Get(url + "/")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	return url
}

// TestDashboard drives the dashboard in a real, headless Chromium: no call
// without a token, a bad token refused, sign-in with a service account's
// token, create -> Ready (seen live through a watch), the API's refusals
// shown with their messages (a quota, a bad version), the kubeconfig, and
// delete.
func TestDashboard(t *testing.T) {
	parallel(t)
	chromium := chromiumPath(t)
	ctx := context.Background()
	admin := mgmtClient(t)

	// A project whose admin is a service account, signing in with its token.
	mustCLI(t, "project", "create", "dash", "--member", "ServiceAccount:default:dash-ui=admin", "--max-clusters", "1", "--wait")
	t.Cleanup(func() {
		_ = admin.DeleteAllOf(context.Background(), &lotsev1.Cluster{}, client.InNamespace("project-dash"))
		waitFor(t, 3*time.Minute, "the dashboard's clusters gone", func() (bool, error) {
			list := &lotsev1.ClusterList{}
			if err := admin.List(context.Background(), list, client.InNamespace("project-dash")); err != nil {
				return false, err
			}
			return len(list.Items) == 0, nil
		})
		_ = admin.Delete(context.Background(), &lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: "dash"}})
	})
	cfg, err := clientcmd.BuildConfigFromFlags("", env.kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	kube := kubernetes.NewForConfigOrDie(cfg)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "dash-ui"}}
	if _, err := kube.CoreV1().ServiceAccounts("default").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().ServiceAccounts("default").Delete(context.Background(), "dash-ui", metav1.DeleteOptions{})
	})
	tr, err := kube.CoreV1().ServiceAccounts("default").CreateToken(ctx, "dash-ui",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := tr.Status.Token

	url := startDashboard(t)

	// No call reaches the API without a token.
	resp, err := http.Get(url + "/k8s/apis/lotse.dev/v1alpha1/projects")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var status metav1.Status
	_ = json.Unmarshal(body, &status)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(status.Message, "sign in") {
		t.Errorf("a call without a token: HTTP %d %s", resp.StatusCode, body)
	}

	// Chromium, kept on this machine: every address but loopback goes to
	// a proxy that does not exist, and no name is resolved.
	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.ProxyServer("http://127.0.0.1:9"),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, allocOpts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	// The first call starts the browser; it must not carry a timeout.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	fail := func(what string, err error) {
		t.Helper()
		page, _ := chromedp.Run(browser, chromedp.OuterHTML(chromedp.CSS("body")))
		t.Fatalf("%s: %v\npage:\n%s", what, err, page)
	}
	run := func(what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(browser, timeout)
		defer cancel()
		if err := chromedp.Do(c, steps...); err != nil {
			fail(what, err)
		}
	}
	read := func(what string, action chromedp.Action[string]) string {
		t.Helper()
		c, cancel := context.WithTimeout(browser, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(c, action)
		if err != nil {
			fail(what, err)
		}
		return s
	}
	text := func(what, sel string) string {
		t.Helper()
		return read(what, chromedp.Text(chromedp.CSS(sel)))
	}
	errorShown := func(what string, parts ...string) {
		t.Helper()
		run(what, 2*time.Minute, chromedp.WaitVisible(chromedp.CSS("#error")))
		msg := text(what, "#error-text")
		t.Logf("%s: the page says %q", what, msg)
		for _, p := range parts {
			if !strings.Contains(msg, p) {
				t.Errorf("%s: the page says %q, not %q", what, msg, p)
			}
		}
		run("dismiss the error", 30*time.Second, chromedp.Click(chromedp.CSS("#error-close")), chromedp.WaitNotVisible(chromedp.CSS("#error")))
	}

	run("open the dashboard", time.Minute, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("#signin-form")))
	run("sign in with a bad token", time.Minute,
		chromedp.SetValue(chromedp.CSS("#token"), "not-a-token"), chromedp.Click(chromedp.CSS("#signin-button")))
	errorShown("a bad token", "Unauthorized")
	run("sign in", 2*time.Minute,
		chromedp.SetValue(chromedp.CSS("#token"), token), chromedp.Click(chromedp.CSS("#signin-button")),
		chromedp.WaitVisible(chromedp.CSS("#app")))
	if who := text("who am I", "#whoami"); !strings.Contains(who, "system:serviceaccount:default:dash-ui") {
		t.Errorf("signed in as %q", who)
	}
	// The service account may not read the default namespace's clusters:
	// the page says so.
	errorShown("clusters of a namespace outside the project", "forbidden")

	run("open the project", 2*time.Minute,
		chromedp.SetValue(chromedp.CSS("#namespace"), "project-dash"), chromedp.Click(chromedp.CSS("#open")),
		chromedp.WaitVisible(chromedp.CSS("#no-clusters")))
	run("create a cluster", 2*time.Minute,
		chromedp.SetValue(chromedp.CSS("#create-name"), "ui1"), chromedp.Click(chromedp.CSS("#create-button")),
		chromedp.WaitVisible(chromedp.CSS("#cluster-ui1")))
	run("the cluster becomes Ready, seen live", 3*time.Minute, chromedp.WaitVisible(chromedp.CSS(`#cluster-ui1[data-ready="True"]`)))
	if summary := text("project summary", "#project-summary"); !strings.Contains(summary, "clusters") {
		t.Logf("project summary: %q", summary)
	}

	run("create a second cluster", 2*time.Minute,
		chromedp.SetValue(chromedp.CSS("#create-name"), "ui2"), chromedp.Click(chromedp.CSS("#create-button")))
	errorShown("a cluster past the quota", "does not fit the quota of project dash", "spec.quota.clusters: 2 used of 1")

	run("select the cluster", time.Minute, chromedp.Click(chromedp.CSS("#cluster-ui1")), chromedp.WaitVisible(chromedp.CSS("#detail")))
	run("ask for a version that does not exist", 2*time.Minute,
		chromedp.SetValue(chromedp.CSS("#detail-version"), "1.20.0"), chromedp.Click(chromedp.CSS("#version-button")))
	errorShown("a bad version", "spec.kubernetes.version", "1.20.0")

	run("the kubeconfig", 2*time.Minute,
		chromedp.Click(chromedp.CSS("#kubeconfig-button")), chromedp.WaitVisible(chromedp.CSS("#kubeconfig")))
	kubeconfig := read("the kubeconfig's text", chromedp.Value(chromedp.CSS("#kubeconfig-text")))
	cl := &lotsev1.Cluster{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: "project-dash", Name: "ui1"}, cl); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(kubeconfig, "certificate-authority-data") || !strings.Contains(kubeconfig, cl.Status.Endpoint) {
		t.Errorf("the kubeconfig the page shows does not reach %s:\n%s", cl.Status.Endpoint, kubeconfig)
	}

	// Scale a pool (to none: no machine needs to start), hibernate and
	// wake, and a credential rotation from start to completion, each seen
	// on the page.
	run("scale a pool", 2*time.Minute,
		chromedp.SetValue(chromedp.CSS("#scale-pool"), "spare"), chromedp.SetValue(chromedp.CSS("#scale-min"), "0"),
		chromedp.SetValue(chromedp.CSS("#scale-max"), "0"), chromedp.Click(chromedp.CSS("#scale-button")),
		chromedp.WaitVisible(chromedp.CSS("#notice")))
	if err := admin.Get(ctx, client.ObjectKey{Namespace: "project-dash", Name: "ui1"}, cl); err != nil {
		t.Fatal(err)
	}
	if len(cl.Spec.Workers) != 1 || cl.Spec.Workers[0].Name != "spare" || cl.Spec.Workers[0].Maximum != 0 {
		t.Errorf("after scaling on the page the pools are %+v", cl.Spec.Workers)
	}
	run("hibernate", 2*time.Minute, chromedp.Click(chromedp.CSS("#hibernate-button")),
		chromedp.WaitVisible(chromedp.CSS(`#cluster-ui1[data-phase="Hibernated"]`)))
	run("wake", 2*time.Minute, chromedp.Click(chromedp.CSS("#wake-button")),
		chromedp.WaitVisible(chromedp.CSS(`#cluster-ui1[data-phase="Running"][data-ready="True"]`)))
	// A rotation of every credential rolls each component twice (a CA
	// rotation adds, then issues again): under a busy CI machine that has
	// taken more than 3 minutes.
	run("start a credential rotation", 6*time.Minute, chromedp.Click(chromedp.CSS("#rotate-start-button")),
		chromedp.WaitVisible(chromedp.CSS(`#detail-rotation[data-phase="Prepared"]`)))
	run("complete the credential rotation", 6*time.Minute, chromedp.Click(chromedp.CSS("#rotate-complete-button")),
		chromedp.WaitVisible(chromedp.CSS(`#detail-rotation[data-phase="Completed"]`)))

	run("delete the cluster", 3*time.Minute,
		chromedp.Click(chromedp.CSS("#delete-button")), chromedp.Click(chromedp.CSS("#delete-confirm")),
		chromedp.WaitNotPresent(chromedp.CSS("#cluster-ui1")))
}
