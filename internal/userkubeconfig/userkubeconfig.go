// Package userkubeconfig issues kubeconfigs for people rather than for
// Lotse: a client certificate that expires within hours, signed by the
// cluster's own controller-manager through the certificates API (signer
// kubernetes.io/kube-apiserver-client). The private key is made where the
// kubeconfig is written and never travels; the admin credentials Lotse
// keeps are used only to ask for the certificate. A certificate cannot be
// withdrawn on its own: rotating the cluster CA ends all of them at once,
// and the group binding below can be deleted to take the rights away.
package userkubeconfig

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

const (
	// MinTTL is the shortest lifetime the certificates API grants.
	MinTTL = 10 * time.Minute
	// MaxTTL keeps these kubeconfigs short-lived: a week at most.
	MaxTTL = 7 * 24 * time.Hour
	// AdminGroup is bound to cluster-admin in the cluster (the binding
	// is made with the first kubeconfig that asks for the group).
	// system:masters cannot be used: the API server refuses to sign
	// it, and no RBAC binding could take it away again.
	AdminGroup = "lotse:cluster-admins"
	// AdminBinding is the ClusterRoleBinding of AdminGroup.
	AdminBinding = "lotse:cluster-admins"
	// ViewerGroup is bound to the upstream ClusterRole view: read most
	// objects, no Secrets, no changes.
	ViewerGroup = "lotse:cluster-viewers"
)

// Request says whom a certificate is for and for how long.
type Request struct {
	User   string
	Groups []string
	TTL    time.Duration
}

var nameChars = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9@._:+-]*$`)

// RequestError is a request that cannot be granted as it is: asking again
// would not help.
type RequestError struct{ error }

func (e RequestError) Unwrap() error { return e.error }

// Validate checks a request before anything is asked of the cluster.
func (r Request) Validate() error {
	if err := r.validate(); err != nil {
		return RequestError{err}
	}
	return nil
}

func (r Request) validate() error {
	switch {
	case r.TTL < MinTTL || r.TTL > MaxTTL:
		return fmt.Errorf("--expires %s: give a lifetime from %s to %s (e.g. 8h)", r.TTL, MinTTL, MaxTTL)
	case !nameChars.MatchString(r.User):
		return fmt.Errorf("--user %q: give a user name of letters, digits and @._:+- (e.g. alice@example.com)", r.User)
	case strings.HasPrefix(r.User, "system:"):
		return fmt.Errorf("--user %q: names starting with system: belong to Kubernetes' own components; choose another", r.User)
	}
	for _, g := range r.Groups {
		switch {
		case !nameChars.MatchString(g):
			return fmt.Errorf("--group %q: give a group name of letters, digits and @._:+-", g)
		case g == "system:masters":
			return fmt.Errorf("--group system:masters: the API server signs no certificate for it (and nothing could revoke it); use --group %s for cluster-admin rights", AdminGroup)
		case strings.HasPrefix(g, "system:"):
			return fmt.Errorf("--group %q: groups starting with system: are Kubernetes' own; choose another", g)
		}
	}
	return nil
}

// Issued is a client certificate and its key (PEM).
type Issued struct {
	Cert, Key []byte
	NotAfter  time.Time
	// BoundAdminGroup: the binding of AdminGroup to cluster-admin did
	// not exist and was made for this certificate.
	BoundAdminGroup bool
}

// Issue asks the cluster that admin reaches for a client certificate for
// the request, with a key made here, approves it, waits for the
// controller-manager to sign it (up to wait) and removes the request again.
func Issue(ctx context.Context, admin kubernetes.Interface, req Request, wait time.Duration) (Issued, error) {
	if err := req.Validate(); err != nil {
		return Issued{}, err
	}
	keyPEM, csrPEM, err := NewCSR(req.User, req.Groups)
	if err != nil {
		return Issued{}, err
	}
	signed, err := Sign(ctx, admin, csrPEM, req, wait)
	if err != nil {
		return Issued{}, err
	}
	signed.Key = keyPEM
	return signed, nil
}

// NewCSR makes a key and a certificate request for user and groups (PEM).
func NewCSR(user string, groups []string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: user, Organization: groups},
	}, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}), nil
}

// Sign has the cluster sign a certificate request made elsewhere (the key
// never comes here), after checking that it asks for exactly req's user
// and groups. Issued carries no key.
func Sign(ctx context.Context, admin kubernetes.Interface, csrPEM []byte, req Request, wait time.Duration) (Issued, error) {
	if err := req.Validate(); err != nil {
		return Issued{}, err
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return Issued{}, RequestError{errors.New("the certificate request is not a PEM CERTIFICATE REQUEST")}
	}
	asked, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return Issued{}, RequestError{fmt.Errorf("the certificate request: %w", err)}
	}
	if err := asked.CheckSignature(); err != nil {
		return Issued{}, RequestError{fmt.Errorf("the certificate request's signature: %w", err)}
	}
	if asked.Subject.CommonName != req.User || !sameGroups(asked.Subject.Organization, req.Groups) {
		return Issued{}, RequestError{fmt.Errorf("the certificate request asks for user %q and groups %v; it must ask for user %q and groups %v", asked.Subject.CommonName, asked.Subject.Organization, req.User, req.Groups)}
	}
	// Nothing but one name and the groups: no other subject attribute, no
	// alternative names, no extension, whatever a signer might make of them.
	if err := plainRequest(asked); err != nil {
		return Issued{}, RequestError{err}
	}
	// What goes to the cluster is exactly what was checked.
	csrPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: block.Bytes})
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return Issued{}, err
	}
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{
			Name:   "lotse-kubeconfig-" + hex.EncodeToString(suffix),
			Labels: map[string]string{"app.kubernetes.io/managed-by": "lotse"},
			Annotations: map[string]string{
				"lotse.dev/user": req.User,
			},
		},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           csrPEM,
			SignerName:        certificatesv1.KubeAPIServerClientSignerName,
			ExpirationSeconds: ptr.To(int32(req.TTL / time.Second)),
			Usages:            []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		},
	}
	csrs := admin.CertificatesV1().CertificateSigningRequests()
	created, err := csrs.Create(ctx, csr, metav1.CreateOptions{})
	if err != nil {
		return Issued{}, fmt.Errorf("request a certificate: %w", err)
	}
	// The request holds no secret, but it has no use once answered.
	defer func() {
		delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = csrs.Delete(delCtx, created.Name, metav1.DeleteOptions{})
	}()
	created.Status.Conditions = append(created.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue,
		Reason: "LotseKubeconfig", Message: "a short-lived kubeconfig asked for through Lotse",
	})
	if _, err := csrs.UpdateApproval(ctx, created.Name, created, metav1.UpdateOptions{}); err != nil {
		return Issued{}, fmt.Errorf("approve the certificate request: %w", err)
	}
	certPEM, err := waitSigned(ctx, admin, created.Name, wait)
	if err != nil {
		return Issued{}, err
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil {
		return Issued{}, errors.New("the signed certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return Issued{}, fmt.Errorf("the signed certificate: %w", err)
	}
	// What was signed must be what was asked for: this key, this name,
	// these groups.
	pub, ok := asked.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) || cert.Subject.CommonName != req.User || !sameGroups(cert.Subject.Organization, req.Groups) {
		return Issued{}, fmt.Errorf("the cluster signed a certificate for %s with another key, user or groups than asked for", cert.Subject)
	}
	issued := Issued{Cert: certPEM, NotAfter: cert.NotAfter}
	for _, b := range groupBindings {
		if !slices.Contains(req.Groups, b.group) {
			continue
		}
		bound, err := ensureGroupBinding(ctx, admin, b.group, b.clusterRole)
		if err != nil {
			return Issued{}, err
		}
		if b.group == AdminGroup {
			issued.BoundAdminGroup = bound
		}
	}
	return issued, nil
}

// groupBindings are the groups Lotse binds in a cluster, each to an
// upstream ClusterRole, when a kubeconfig first asks for it.
var groupBindings = []struct{ group, clusterRole string }{
	{AdminGroup, "cluster-admin"},
	{ViewerGroup, "view"},
}

// plainRequest refuses a certificate request that asks for more than a
// common name and organizations.
func plainRequest(r *x509.CertificateRequest) error {
	cn, org := asn1.ObjectIdentifier{2, 5, 4, 3}, asn1.ObjectIdentifier{2, 5, 4, 10}
	cns := 0
	for _, a := range r.Subject.Names {
		switch {
		case a.Type.Equal(cn):
			cns++
		case a.Type.Equal(org):
		default:
			return fmt.Errorf("the certificate request's subject has attribute %s; only a common name (the user) and organizations (the groups) are allowed", a.Type)
		}
	}
	switch {
	case cns != 1:
		return fmt.Errorf("the certificate request's subject has %d common names; it must have exactly one (the user)", cns)
	case len(r.DNSNames)+len(r.EmailAddresses)+len(r.IPAddresses)+len(r.URIs) > 0:
		return errors.New("the certificate request asks for alternative names; a client certificate of a user has none")
	case len(r.Extensions) > 0 || len(r.ExtraExtensions) > 0:
		return errors.New("the certificate request asks for extensions; a client certificate of a user has none")
	}
	return nil
}

func sameGroups(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

func waitSigned(ctx context.Context, admin kubernetes.Interface, name string, wait time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		cur, err := admin.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		if err != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("read the certificate request: %w", err)
		}
		if err == nil {
			for _, c := range cur.Status.Conditions {
				if (c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed) && c.Status == corev1.ConditionTrue {
					return nil, fmt.Errorf("the cluster refused the certificate: %s: %s", c.Reason, c.Message)
				}
			}
			if len(cur.Status.Certificate) > 0 {
				return cur.Status.Certificate, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the cluster's controller-manager signed no certificate within %s: is the cluster running (not hibernated) and healthy? (lotse cluster get)", wait)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ensureGroupBinding binds group to clusterRole (a ClusterRoleBinding of
// the group's name), and says whether it made the binding. A binding of
// that name that says something else (changed by hand) is left alone and
// reported.
func ensureGroupBinding(ctx context.Context, admin kubernetes.Interface, group, clusterRole string) (bool, error) {
	want := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: group, Labels: map[string]string{"app.kubernetes.io/managed-by": "lotse"}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: group}},
	}
	bindings := admin.RbacV1().ClusterRoleBindings()
	_, err := bindings.Create(ctx, want, metav1.CreateOptions{})
	if err == nil {
		return true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return false, fmt.Errorf("bind %s to %s: %w", group, clusterRole, err)
	}
	cur, err := bindings.Get(ctx, group, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("read ClusterRoleBinding %s: %w", group, err)
	}
	bindsGroup := slices.ContainsFunc(cur.Subjects, func(s rbacv1.Subject) bool { return s.Kind == rbacv1.GroupKind && s.Name == group })
	if cur.RoleRef != want.RoleRef || !bindsGroup {
		return false, fmt.Errorf("ClusterRoleBinding %s does not bind group %s to %s (changed by hand?): the kubeconfig would not have the rights asked for; fix the binding or delete it", group, group, clusterRole)
	}
	return false, nil
}
