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
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
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
)

// Request says whom a certificate is for and for how long.
type Request struct {
	User   string
	Groups []string
	TTL    time.Duration
}

var nameChars = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9@._:+-]*$`)

// Validate checks a request before anything is asked of the cluster.
func (r Request) Validate() error {
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
// the request, approves it, waits for the controller-manager to sign it
// (up to wait) and removes the request again.
func Issue(ctx context.Context, admin kubernetes.Interface, req Request, wait time.Duration) (Issued, error) {
	if err := req.Validate(); err != nil {
		return Issued{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Issued{}, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: req.User, Organization: req.Groups},
	}, key)
	if err != nil {
		return Issued{}, err
	}
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
			Request:           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}),
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
		Reason: "LotseKubeconfig", Message: "a kubeconfig asked for with lotse cluster kubeconfig --expires",
	})
	if _, err := csrs.UpdateApproval(ctx, created.Name, created, metav1.UpdateOptions{}); err != nil {
		return Issued{}, fmt.Errorf("approve the certificate request: %w", err)
	}
	certPEM, err := waitSigned(ctx, admin, created.Name, wait)
	if err != nil {
		return Issued{}, err
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return Issued{}, errors.New("the signed certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return Issued{}, fmt.Errorf("the signed certificate: %w", err)
	}
	// What was signed must be what was asked for: this key, this name,
	// these groups.
	if !key.PublicKey.Equal(cert.PublicKey) || cert.Subject.CommonName != req.User ||
		!slices.Equal(slices.Sorted(slices.Values(cert.Subject.Organization)), slices.Sorted(slices.Values(req.Groups))) {
		return Issued{}, fmt.Errorf("the cluster signed a certificate for %s with another key, user or groups than asked for", cert.Subject)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Issued{}, err
	}
	issued := Issued{Cert: certPEM, Key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), NotAfter: cert.NotAfter}
	if slices.Contains(req.Groups, AdminGroup) {
		if issued.BoundAdminGroup, err = ensureAdminBinding(ctx, admin); err != nil {
			return Issued{}, err
		}
	}
	return issued, nil
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

// ensureAdminBinding binds AdminGroup to cluster-admin, and says whether
// it made the binding. A binding of that name that says something else
// (changed by hand) is left alone and reported.
func ensureAdminBinding(ctx context.Context, admin kubernetes.Interface) (bool, error) {
	want := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: AdminBinding, Labels: map[string]string{"app.kubernetes.io/managed-by": "lotse"}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: AdminGroup}},
	}
	bindings := admin.RbacV1().ClusterRoleBindings()
	_, err := bindings.Create(ctx, want, metav1.CreateOptions{})
	if err == nil {
		return true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return false, fmt.Errorf("bind %s to cluster-admin: %w", AdminGroup, err)
	}
	cur, err := bindings.Get(ctx, AdminBinding, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("read ClusterRoleBinding %s: %w", AdminBinding, err)
	}
	bindsGroup := slices.ContainsFunc(cur.Subjects, func(s rbacv1.Subject) bool { return s.Kind == rbacv1.GroupKind && s.Name == AdminGroup })
	if cur.RoleRef != want.RoleRef || !bindsGroup {
		return false, fmt.Errorf("ClusterRoleBinding %s does not bind group %s to cluster-admin (changed by hand?): the kubeconfig would not have the rights asked for; fix the binding or delete it", AdminBinding, AdminGroup)
	}
	return false, nil
}
