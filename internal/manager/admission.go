package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"k8s.io/utils/ptr"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/quota"
)

// WebhookConfigurationName is the manager's ValidatingWebhookConfiguration.
const WebhookConfigurationName = "lotse"

// admissionServer serves the manager's admission webhooks over TLS. Its CA
// and port are kept in the state directory, so a restarted manager is
// reached where the configuration already points and trusted by the CA
// bundle it already carries: the webhooks keep working across restarts
// without waiting for the new leader to write the configuration.
type admissionServer struct {
	listener net.Listener
	server   *http.Server
	// url is where the management API reaches this server, unless
	// service is set.
	url      string
	service  *admissionregistrationv1.ServiceReference
	caBundle []byte
}

// admissionOptions say where the webhook listens and how the management
// API reaches it.
type admissionOptions struct {
	// addr is host:port; port 0: the port the last manager with this
	// state directory used if it is free, else a new one.
	addr string
	// advertise is the host the management API reaches it at (default:
	// addr's host).
	advertise string
	// service (NAMESPACE/NAME), if set, is the Service it is reached
	// through instead.
	service  string
	stateDir string
}

// startAdmission starts the admission webhook's server.
func startAdmission(ctx context.Context, c client.Client, o admissionOptions, admitter *quota.Admitter) (*admissionServer, error) {
	dir := filepath.Join(o.stateDir, "admission")
	var svc *admissionregistrationv1.ServiceReference
	if o.service != "" {
		ns, name, ok := strings.Cut(o.service, "/")
		if !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("--webhook-service %q: want NAMESPACE/NAME", o.service)
		}
		svc = &admissionregistrationv1.ServiceReference{Namespace: ns, Name: name, Port: ptr.To[int32](443)}
		if err := sharedCA(ctx, c, dir, ns, name+"-ca"); err != nil {
			return nil, fmt.Errorf("admission webhook CA: %w", err)
		}
	}
	ca, err := pki.EnsureCA(dir, "ca", "lotse-admission")
	if err != nil {
		return nil, fmt.Errorf("admission webhook CA: %w", err)
	}
	portFile := filepath.Join(dir, "port")
	ln, err := listenReusing(o.addr, portFile)
	if err != nil {
		return nil, fmt.Errorf("admission webhook on %s: %w", o.addr, err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	advertise := o.advertise
	if advertise == "" && svc == nil {
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			ln.Close()
			return nil, fmt.Errorf("admission webhook on %s: listening on every address, give the address the management API reaches it at (--webhook-advertise-address)", o.addr)
		}
		advertise = host
	}
	_ = fsutil.WriteFileAtomic(portFile, []byte(port), 0o600)
	spec := pki.CertSpec{CommonName: "lotse-admission", Server: true}
	switch {
	case svc != nil:
		spec.DNSNames = []string{svc.Name + "." + svc.Namespace + ".svc", svc.Name + "." + svc.Namespace + ".svc.cluster.local"}
	case net.ParseIP(advertise) != nil:
		spec.IPs = []net.IP{net.ParseIP(advertise)}
	default:
		spec.DNSNames = []string{advertise}
	}
	certs := &renewingCert{ca: ca, spec: spec}
	if _, err := certs.get(nil); err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/validate/clusters", admitter.Clusters())
	mux.Handle("/validate/projects", admitter.Projects())
	s := &admissionServer{
		listener: ln,
		service:  svc,
		url:      "https://" + net.JoinHostPort(advertise, port),
		caBundle: pki.CertPEM(ca.Cert),
		server: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get},
		},
	}
	go func() {
		if err := s.server.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			ctrl.Log.WithName("admission").Error(err, "serve")
		}
	}()
	return s, nil
}

// listenReusing listens on addr; with port 0 it first tries the port
// recorded in portFile.
func listenReusing(addr, portFile string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if port == "0" {
		if last, err := os.ReadFile(portFile); err == nil {
			if ln, err := net.Listen("tcp", net.JoinHostPort(host, strings.TrimSpace(string(last)))); err == nil {
				return ln, nil
			}
		}
	}
	return net.Listen("tcp", addr)
}

// renewingCert is the serving certificate, issued again when it nears its
// end.
type renewingCert struct {
	ca   *pki.CA
	spec pki.CertSpec
	mu   sync.Mutex
	cert *tls.Certificate
}

func (r *renewingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert != nil && time.Until(r.cert.Leaf.NotAfter) > 30*24*time.Hour {
		return r.cert, nil
	}
	leaf, err := r.ca.Issue(r.spec)
	if err != nil {
		return nil, err
	}
	r.cert = &tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}
	return r.cert, nil
}

func (s *admissionServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.server.Shutdown(ctx)
}

// configuration is what the management API needs to call this server:
// Cluster creates and updates in project namespaces, and Project deletes.
// Both fail closed: a quota that holds only while the manager runs would
// not be one, and a delete let through while the webhook was slow cannot
// be taken back (the project's finalizer holds it, but it stays deleting:
// no new clusters, until its clusters are gone). A delete refused while
// the manager is away can be asked again.
func (s *admissionServer) configuration() *admissionregistrationv1.ValidatingWebhookConfiguration {
	none := admissionregistrationv1.SideEffectClassNone
	fail := admissionregistrationv1.Fail
	equivalent := admissionregistrationv1.Equivalent
	timeout := int32(10)
	url := func(path string) admissionregistrationv1.WebhookClientConfig {
		if s.service != nil {
			svc := *s.service
			svc.Path = &path
			return admissionregistrationv1.WebhookClientConfig{Service: &svc, CABundle: s.caBundle}
		}
		u := s.url + path
		return admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: s.caBundle}
	}
	// Written as the API server defaults them, so that the comparison in
	// applyWebhookConfiguration sees no difference where there is none.
	allScopes := admissionregistrationv1.AllScopes
	rule := func(resource string, ops ...admissionregistrationv1.OperationType) []admissionregistrationv1.RuleWithOperations {
		return []admissionregistrationv1.RuleWithOperations{{
			Operations: ops,
			Rule: admissionregistrationv1.Rule{
				APIGroups: []string{lotsev1.GroupVersion.Group}, APIVersions: []string{"*"}, Resources: []string{resource}, Scope: &allScopes,
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
				NamespaceSelector:       &metav1.LabelSelector{},
				FailurePolicy:           &fail,
				MatchPolicy:             &equivalent,
				SideEffects:             &none,
				TimeoutSeconds:          &timeout,
				AdmissionReviewVersions: []string{"v1"},
			},
		},
	}
}

// register writes the webhook configuration (where it differs) once this
// manager leads, and keeps it so: the management API then calls this
// manager's server, and a configuration deleted or weakened by hand comes
// back within a minute.
//
// With owner set (a ClusterRole of the Helm chart), the configuration is
// that ClusterRole's dependent: `helm uninstall` removes the role, and the
// garbage collector the configuration, which would otherwise refuse every
// Cluster write in project namespaces with nobody serving it.
func (s *admissionServer) register(c client.Client, owner string) manager.Runnable {
	return manager.RunnableFunc(func(ctx context.Context) error {
		for {
			want := s.configuration()
			err := ownedBy(ctx, c, want, owner)
			if err == nil {
				err = applyWebhookConfiguration(ctx, c, want)
			}
			if err != nil && ctx.Err() == nil {
				ctrl.Log.WithName("admission").Error(err, "write the webhook configuration; retrying")
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Minute):
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
	if sameWebhooks(have.Webhooks, want.Webhooks) && reflect.DeepEqual(have.OwnerReferences, want.OwnerReferences) {
		return nil
	}
	have.Webhooks = want.Webhooks
	have.OwnerReferences = want.OwnerReferences
	return c.Update(ctx, have)
}

// ownedBy makes the ClusterRole named owner (if any) the owner of cfg.
func ownedBy(ctx context.Context, c client.Client, cfg *admissionregistrationv1.ValidatingWebhookConfiguration, owner string) error {
	if owner == "" {
		return nil
	}
	role := &rbacv1.ClusterRole{}
	if err := c.Get(ctx, client.ObjectKey{Name: owner}, role); err != nil {
		return fmt.Errorf("the webhook configuration's owner, ClusterRole %s: %w", owner, err)
	}
	cfg.OwnerReferences = []metav1.OwnerReference{{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: role.Name, UID: role.UID}}
	return nil
}

// sameWebhooks compares what Lotse sets of each webhook (the API server
// fills in the rest).
func sameWebhooks(have, want []admissionregistrationv1.ValidatingWebhook) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range want {
		h, w := have[i], want[i]
		if h.Name != w.Name || !reflect.DeepEqual(h.ClientConfig, w.ClientConfig) || !reflect.DeepEqual(h.Rules, w.Rules) ||
			!reflect.DeepEqual(h.NamespaceSelector, w.NamespaceSelector) || !reflect.DeepEqual(h.FailurePolicy, w.FailurePolicy) ||
			!reflect.DeepEqual(h.MatchPolicy, w.MatchPolicy) || !reflect.DeepEqual(h.TimeoutSeconds, w.TimeoutSeconds) ||
			!reflect.DeepEqual(h.SideEffects, w.SideEffects) ||
			(h.ObjectSelector != nil && (len(h.ObjectSelector.MatchLabels) > 0 || len(h.ObjectSelector.MatchExpressions) > 0)) ||
			len(h.MatchConditions) > 0 {
			return false
		}
	}
	return true
}

// removeWebhookConfiguration deletes the configuration a manager with its
// webhook on wrote: with the webhook off it would fail closed and refuse
// every cluster write in project namespaces.
func removeWebhookConfiguration(ctx context.Context, c client.Client) error {
	err := c.Delete(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: WebhookConfigurationName}})
	return client.IgnoreNotFound(err)
}

// sharedCA makes the webhook's CA in dir the one kept in the Secret
// namespace/name, which the first manager to start writes: every replica
// behind the Service then serves a certificate the configuration's CA
// bundle trusts.
func sharedCA(ctx context.Context, c client.Client, dir, namespace, name string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	restore := func(s *corev1.Secret) error {
		for file, key := range map[string]string{"ca.crt": corev1.TLSCertKey, "ca.key": corev1.TLSPrivateKeyKey} {
			if len(s.Data[key]) == 0 {
				return fmt.Errorf("secret %s/%s has no %s", namespace, name, key)
			}
			if err := fsutil.WriteFileAtomic(filepath.Join(dir, file), s.Data[key], 0o600); err != nil {
				return err
			}
		}
		return nil
	}
	s := &corev1.Secret{}
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, s)
	if err == nil {
		return restore(s)
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	// None yet: this manager's CA becomes the shared one, unless another
	// manager wrote its own first.
	if _, err := pki.EnsureCA(dir, "ca", "lotse-admission"); err != nil {
		return err
	}
	crt, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return err
	}
	key, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return err
	}
	s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}}
	if err := c.Create(ctx, s); apierrors.IsAlreadyExists(err) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil {
			return err
		}
		return restore(s)
	} else if err != nil {
		return err
	}
	return nil
}
