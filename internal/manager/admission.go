package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/quota"
)

// WebhookConfigurationName is the manager's ValidatingWebhookConfiguration.
const WebhookConfigurationName = "lotse"

// admissionServer serves the manager's admission webhooks over TLS, with a
// certificate from a CA made at start (nothing to keep or rotate: the
// configuration that the leader writes carries the new CA).
type admissionServer struct {
	listener net.Listener
	server   *http.Server
	// url is where the management API reaches this server.
	url      string
	caBundle []byte
}

// startAdmission listens on addr (host:port, port 0 allocates one); the
// management API reaches it at advertise (default: the listening address).
func startAdmission(addr, advertise string, admitter *quota.Admitter) (*admissionServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admission webhook on %s: %w", addr, err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if advertise == "" {
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			ln.Close()
			return nil, fmt.Errorf("admission webhook on %s: listening on every address, give the address the management API reaches it at (--webhook-advertise-address)", addr)
		}
		advertise = host
	}
	ca, err := pki.NewCA("lotse-admission")
	if err != nil {
		ln.Close()
		return nil, err
	}
	spec := pki.CertSpec{CommonName: "lotse-admission", Server: true}
	if ip := net.ParseIP(advertise); ip != nil {
		spec.IPs = []net.IP{ip}
	} else {
		spec.DNSNames = []string{advertise}
	}
	leaf, err := ca.Issue(spec)
	if err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/validate/clusters", admitter.Clusters())
	mux.Handle("/validate/projects", admitter.Projects())
	s := &admissionServer{
		listener: ln,
		url:      "https://" + net.JoinHostPort(advertise, port),
		caBundle: pki.CertPEM(ca.Cert),
		server: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			TLSConfig: &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}},
			},
		},
	}
	go func() {
		if err := s.server.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			ctrl.Log.WithName("admission").Error(err, "serve")
		}
	}()
	return s, nil
}

func (s *admissionServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.server.Shutdown(ctx)
}

// configuration is what the management API needs to call this server:
// Cluster creates and updates in project namespaces (failing closed: a
// quota that holds only while the manager runs would not be one), and
// Project deletes (failing open: the project's finalizer holds it anyway).
func (s *admissionServer) configuration() *admissionregistrationv1.ValidatingWebhookConfiguration {
	none := admissionregistrationv1.SideEffectClassNone
	fail, ignore := admissionregistrationv1.Fail, admissionregistrationv1.Ignore
	equivalent := admissionregistrationv1.Equivalent
	timeout := int32(10)
	url := func(path string) admissionregistrationv1.WebhookClientConfig {
		u := s.url + path
		return admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: s.caBundle}
	}
	rule := func(resource string, ops ...admissionregistrationv1.OperationType) []admissionregistrationv1.RuleWithOperations {
		return []admissionregistrationv1.RuleWithOperations{{
			Operations: ops,
			Rule: admissionregistrationv1.Rule{
				APIGroups: []string{lotsev1.GroupVersion.Group}, APIVersions: []string{"*"}, Resources: []string{resource},
			},
		}}
	}
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: WebhookConfigurationName},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{
			{
				Name:         "quota.clusters.lotse.dev",
				ClientConfig: url("/validate/clusters"),
				Rules:        rule("clusters", admissionregistrationv1.Create, admissionregistrationv1.Update),
				NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: lotsev1.LabelProject, Operator: metav1.LabelSelectorOpExists},
				}},
				FailurePolicy:           &fail,
				MatchPolicy:             &equivalent,
				SideEffects:             &none,
				TimeoutSeconds:          &timeout,
				AdmissionReviewVersions: []string{"v1"},
			},
			{
				Name:                    "delete.projects.lotse.dev",
				ClientConfig:            url("/validate/projects"),
				Rules:                   rule("projects", admissionregistrationv1.Delete),
				FailurePolicy:           &ignore,
				MatchPolicy:             &equivalent,
				SideEffects:             &none,
				TimeoutSeconds:          &timeout,
				AdmissionReviewVersions: []string{"v1"},
			},
		},
	}
}

// register writes the webhook configuration (where it differs) once this
// manager leads: the management API then calls this manager's server.
func (s *admissionServer) register(c client.Client) manager.Runnable {
	return manager.RunnableFunc(func(ctx context.Context) error {
		want := s.configuration()
		for {
			err := applyWebhookConfiguration(ctx, c, want)
			if err == nil {
				return nil
			}
			ctrl.Log.WithName("admission").Error(err, "register the webhook configuration; retrying")
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(2 * time.Second):
			}
		}
	})
}

func applyWebhookConfiguration(ctx context.Context, c client.Client, want *admissionregistrationv1.ValidatingWebhookConfiguration) error {
	have := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	err := c.Get(ctx, client.ObjectKeyFromObject(want), have)
	if apierrors.IsNotFound(err) {
		return c.Create(ctx, want)
	}
	if err != nil {
		return err
	}
	if reflect.DeepEqual(have.Webhooks, want.Webhooks) {
		return nil
	}
	have.Webhooks = want.Webhooks
	return c.Update(ctx, have)
}
