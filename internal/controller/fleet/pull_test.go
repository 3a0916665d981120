package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
	"github.com/lotse/lotse/config/crd"
	"github.com/lotse/lotse/internal/controlplane/process/processtest"
	"github.com/lotse/lotse/internal/federation/agent"
)

func csrFor(t *testing.T, subject pkix.Name, dns []string, signer string, usages ...certificatesv1.KeyUsage) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject, DNSNames: dns}, key)
	if err != nil {
		t.Fatal(err)
	}
	return &certificatesv1.CertificateSigningRequest{Spec: certificatesv1.CertificateSigningRequestSpec{
		Request: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), SignerName: signer, Usages: usages}}
}

// Only the member's own agent identity is approved: its name, no groups,
// no alternative names, the client signer, client usages.
func TestAgentCSRProblem(t *testing.T) {
	client := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
	for _, tc := range []struct {
		name string
		csr  *certificatesv1.CertificateSigningRequest
		want string
	}{
		{"the agent", csrFor(t, pkix.Name{CommonName: workv1.AgentUser("pm")}, nil, certificatesv1.KubeAPIServerClientSignerName, client...), ""},
		{"another member's agent", csrFor(t, pkix.Name{CommonName: workv1.AgentUser("other")}, nil, certificatesv1.KubeAPIServerClientSignerName, client...), "may ask only for CN=system:lotse:fleet-agent:pm"},
		{"a group", csrFor(t, pkix.Name{CommonName: workv1.AgentUser("pm"), Organization: []string{"system:masters"}}, nil, certificatesv1.KubeAPIServerClientSignerName, client...), "without organizations"},
		{"a kubelet's signer", csrFor(t, pkix.Name{CommonName: workv1.AgentUser("pm")}, nil, certificatesv1.KubeAPIServerClientKubeletSignerName, client...), "signed by kubernetes.io/kube-apiserver-client"},
		{"alternative names", csrFor(t, pkix.Name{CommonName: workv1.AgentUser("pm")}, []string{"api.example"}, certificatesv1.KubeAPIServerClientSignerName, client...), "no subject alternative names"},
		{"a server's usage", csrFor(t, pkix.Name{CommonName: workv1.AgentUser("pm")}, nil, certificatesv1.KubeAPIServerClientSignerName, certificatesv1.UsageServerAuth), "usage server auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := agentCSRProblem(tc.csr, "pm")
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// A pull-mode member's agent, with the bootstrap token the manager
// issued, gets a certificate for its own identity (Lotse approves, the
// controller-manager signs), keeps it in the member, and may then do in
// the fleet only what its Role says. A request for another identity from
// the same token is denied. One real API server plays the management
// API, the fleet and the member.
func TestAgentBootstrap(t *testing.T) {
	kc := processtest.ControlPlane(t)
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, lotsev1.AddToScheme, workv1.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []func() ([][]byte, error){crd.Manifests, crd.FleetManifests} {
		manifests, err := m()
		must(err)
		must(crd.Apply(ctx, c, manifests))
	}
	m := &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "pm"},
		Spec: lotsev1.FleetMemberSpec{Fleet: "fl", SyncMode: lotsev1.SyncPull}}
	must(c.Create(ctx, m))
	// Bad input: a pull-mode member carries no credentials.
	bad := &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bad"},
		Spec: lotsev1.FleetMemberSpec{Fleet: "fl", SyncMode: lotsev1.SyncPull, Cluster: "c1"}}
	if err := c.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "remove spec.cluster and spec.kubeconfigSecretRef") {
		t.Errorf("a pull-mode member with a cluster: %v", err)
	}

	r := &Reconciler{Client: c}
	must(ensureAgentAccess(ctx, cs, "pm"))
	tokenID, err := r.ensureBootstrapToken(ctx, cs, m, kc)
	must(err)
	again, err := r.ensureBootstrapToken(ctx, cs, m, kc)
	must(err)
	if again != tokenID {
		t.Errorf("a second look issued another token: %s, then %s", tokenID, again)
	}
	s := &corev1.Secret{}
	must(c.Get(ctx, client.ObjectKey{Namespace: "default", Name: AgentSecretName("pm")}, s))
	bootstrap, err := clientcmd.RESTConfigFromKubeConfig(s.Data["kubeconfig"])
	must(err)
	if !strings.HasPrefix(bootstrap.BearerToken, tokenID+".") || bootstrap.CertData != nil {
		t.Fatalf("the bootstrap kubeconfig carries more or other than the token")
	}

	// The agent asks; the manager's loop approves (requests from the
	// token, or from the agent itself with approvingToken "").
	type result struct {
		cfg *rest.Config
		err error
	}
	identityApproved := func(what string, bootstrap *rest.Config, store agent.IdentitySecret, approvingToken string) result {
		t.Helper()
		got := make(chan result, 1)
		go func() {
			c, err := agent.FleetIdentity(ctx, "pm", bootstrap, cs, store)
			got <- result{c, err}
		}()
		for {
			must(approveAgentCSRs(ctx, cs, "pm", approvingToken))
			select {
			case r := <-got:
				must(r.err)
				return r
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
				t.Fatal("no certificate: " + what)
			}
		}
	}
	store := agent.IdentitySecret{Namespace: "default", Name: "fleet-identity"}
	identity := identityApproved("the agent's first", bootstrap, store, tokenID)
	agentCS, err := kubernetes.NewForConfig(identity.cfg)
	must(err)
	// What its Role allows: its Works and Lease; nothing else.
	if _, err := agentCS.CoordinationV1().Leases(workv1.ExecutionNamespace("pm")).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		// list is not granted on leases; get is.
		t.Errorf("listing leases: %v", err)
	}
	works := &workv1.WorkList{}
	agentClient, err := client.New(identity.cfg, client.Options{Scheme: scheme})
	must(err)
	must(agentClient.List(ctx, works, client.InNamespace(workv1.ExecutionNamespace("pm"))))
	if err := agentClient.List(ctx, works, client.InNamespace("default")); !apierrors.IsForbidden(err) {
		t.Errorf("the agent listed another namespace's Works: %v", err)
	}
	if _, err := agentCS.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent listed Secrets: %v", err)
	}
	// Kept in the member: a restarted agent needs no token.
	noToken := *bootstrap
	noToken.BearerToken = ""
	kept, err := agent.FleetIdentity(ctx, "pm", &noToken, cs, store)
	must(err)
	if string(kept.CertData) != string(identity.cfg.CertData) {
		t.Error("the kept identity is not the one issued")
	}

	// Near its end (here: always), the agent renews as itself, without a
	// token; the manager approves that too.
	renewing := store
	renewing.RenewWhenLeft = 1
	renewed := identityApproved("a renewal", &noToken, renewing, "")
	if string(renewed.cfg.CertData) == string(identity.cfg.CertData) || renewed.cfg.BearerToken != "" {
		t.Error("the renewal gave no new certificate")
	}
	renewedClient, err := client.New(renewed.cfg, client.Options{Scheme: scheme})
	must(err)
	must(renewedClient.List(ctx, works, client.InNamespace(workv1.ExecutionNamespace("pm"))))
	if at := agent.RenewAt(renewed.cfg, store); time.Until(at) < 200*24*time.Hour {
		t.Errorf("a year's certificate is renewed at %s, before two thirds of its life", at)
	}

	// Expired (the agent was stopped past its certificate's end): it can
	// neither use nor renew it; without a token it says what to do, and
	// with the fleet's current token (register hands it over again) it
	// joins again.
	expiredStore := agent.IdentitySecret{Namespace: "default", Name: "expired-identity"}
	certPEM, keyPEM := expiredCertificate(t, workv1.AgentUser("pm"))
	must(c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: expiredStore.Name}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}}))
	if _, err := agent.FleetIdentity(ctx, "pm", &noToken, cs, expiredStore); err == nil || !strings.Contains(err.Error(), "register the member again") {
		t.Errorf("an expired identity without a token: %v", err)
	}
	rejoined := identityApproved("an agent whose certificate expired", bootstrap, expiredStore, tokenID)
	rejoinedClient, err := client.New(rejoined.cfg, client.Options{Scheme: scheme})
	must(err)
	must(rejoinedClient.List(ctx, works, client.InNamespace(workv1.ExecutionNamespace("pm"))))

	// Another identity from the same token is denied.
	bootCS, err := kubernetes.NewForConfig(bootstrap)
	must(err)
	other := csrFor(t, pkix.Name{CommonName: workv1.AgentUser("other")}, nil, certificatesv1.KubeAPIServerClientSignerName,
		certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth)
	other.Name = "not-the-agent"
	_, err = bootCS.CertificatesV1().CertificateSigningRequests().Create(ctx, other, metav1.CreateOptions{})
	must(err)
	must(approveAgentCSRs(ctx, cs, "pm", tokenID))
	denied, err := cs.CertificatesV1().CertificateSigningRequests().Get(ctx, "not-the-agent", metav1.GetOptions{})
	must(err)
	if len(denied.Status.Conditions) != 1 || denied.Status.Conditions[0].Type != certificatesv1.CertificateDenied {
		t.Errorf("another identity's request: %+v", denied.Status.Conditions)
	}

	// A token near its end is replaced, so that registering the member
	// again hands out one its agent can use.
	must(c.Get(ctx, client.ObjectKey{Namespace: "default", Name: AgentSecretName("pm")}, s))
	s.Data["expiration"] = []byte(time.Now().Add(bootstrapTokenRenewal / 2).UTC().Format(time.RFC3339))
	must(c.Update(ctx, s))
	next, err := r.ensureBootstrapToken(ctx, cs, m, kc)
	must(err)
	must(c.Get(ctx, client.ObjectKey{Namespace: "default", Name: AgentSecretName("pm")}, s))
	if expires, err := time.Parse(time.RFC3339, string(s.Data["expiration"])); next == tokenID || err != nil || time.Until(expires) < time.Hour {
		t.Errorf("a token about to expire was kept: %s (was %s), expiring %s", next, tokenID, s.Data["expiration"])
	}
}

// expiredCertificate is a self-signed client certificate for cn whose
// life ended an hour ago, and its key (PEM).
func expiredCertificate(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
