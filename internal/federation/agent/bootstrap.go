package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/log"

	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
)

// The agent's identity in the fleet is a client certificate for
// system:lotse:fleet-agent:MEMBER. It asks for one with the bootstrap
// token `lotse fleet register` gave it (a CertificateSigningRequest that
// Lotse approves and the fleet's controller-manager signs) and keeps it
// in a Secret of the member, so that a restarted agent needs no token.

// IdentitySecret is where in the member the agent keeps its identity.
type IdentitySecret struct {
	Namespace, Name string
	// RenewWhenLeft is the part of its life (0-1) a certificate has left
	// when the agent asks for the next one; 0 means a third.
	RenewWhenLeft float64
}

func (s IdentitySecret) renewWhenLeft() float64 {
	if s.RenewWhenLeft <= 0 {
		return 1.0 / 3
	}
	return s.RenewWhenLeft
}

// FleetIdentity returns a configuration that reaches the fleet as the
// member's agent: from the Secret, or a new certificate when there is
// none or it nears its end, asked for with the one it has (still valid)
// or else with bootstrap's token, and kept in the Secret.
func FleetIdentity(ctx context.Context, member string, bootstrap *rest.Config, local kubernetes.Interface, store IdentitySecret) (*rest.Config, error) {
	s, err := local.CoreV1().Secrets(store.Namespace).Get(ctx, store.Name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading the agent's identity %s/%s: %w", store.Namespace, store.Name, err)
	}
	asker := bootstrap
	if err == nil {
		certPEM, keyPEM := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
		left, ok := lifeLeft(certPEM)
		switch {
		case ok && left > store.renewWhenLeft():
			return withCertificate(bootstrap, certPEM, keyPEM), nil
		case ok && left > 0:
			// Near its end: the agent renews with the identity it has, as a
			// kubelet does; no token is needed.
			asker = withCertificate(bootstrap, certPEM, keyPEM)
		}
	}
	if asker.BearerToken == "" && asker.CertData == nil {
		return nil, fmt.Errorf("the agent has no valid identity in %s/%s and no bootstrap token to ask for one (register the member again for a new token)", store.Namespace, store.Name)
	}
	certPEM, keyPEM, err := requestCertificate(ctx, member, asker)
	if err != nil {
		return nil, err
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: store.Namespace, Name: store.Name}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}}
	if _, err := local.CoreV1().Secrets(store.Namespace).Create(ctx, secret, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		_, err = local.CoreV1().Secrets(store.Namespace).Update(ctx, secret, metav1.UpdateOptions{})
		if err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("keeping the agent's identity in %s/%s: %w", store.Namespace, store.Name, err)
	}
	return withCertificate(bootstrap, certPEM, keyPEM), nil
}

// lifeLeft is the part (0-1) of a certificate's life still ahead; ok is
// false when it does not parse.
func lifeLeft(certPEM []byte) (float64, bool) {
	c, err := parseCert(certPEM)
	if err != nil {
		return 0, false
	}
	life := c.NotAfter.Sub(c.NotBefore)
	if life <= 0 {
		return 0, true
	}
	return max(float64(time.Until(c.NotAfter))/float64(life), 0), true
}

// RenewAt is when an identity should be renewed: when it has left the
// part of its life that store says.
func RenewAt(cfg *rest.Config, store IdentitySecret) time.Time {
	c, err := parseCert(cfg.CertData)
	if err != nil {
		return time.Time{}
	}
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotAfter.Add(-time.Duration(float64(life) * store.renewWhenLeft()))
}

func parseCert(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, fmt.Errorf("not PEM")
	}
	return x509.ParseCertificate(block.Bytes)
}

func withCertificate(bootstrap *rest.Config, certPEM, keyPEM []byte) *rest.Config {
	cfg := rest.AnonymousClientConfig(bootstrap)
	cfg.CertData, cfg.KeyData = certPEM, keyPEM
	return cfg
}

// requestCertificate asks the fleet for the agent's client certificate
// and waits until it is issued or denied.
func requestCertificate(ctx context.Context, member string, bootstrap *rest.Config) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: workv1.AgentUser(member)}}, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	cs, err := kubernetes.NewForConfig(bootstrap)
	if err != nil {
		return nil, nil, err
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return nil, nil, err
	}
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "lotse-fleet-agent-" + member + "-" + hex.EncodeToString(suffix)},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName:        certificatesv1.KubeAPIServerClientSignerName,
			Usages:            []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
			ExpirationSeconds: ptr.To(int32(365 * 24 * 3600)),
		},
	}
	if csr, err = cs.CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{}); err != nil {
		return nil, nil, fmt.Errorf("asking the fleet for the agent's certificate: %w", err)
	}
	log.FromContext(ctx).Info("asked the fleet for the agent's certificate", "request", csr.Name)
	for {
		cur, err := cs.CertificatesV1().CertificateSigningRequests().Get(ctx, csr.Name, metav1.GetOptions{})
		if err != nil && ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if err == nil {
			for _, c := range cur.Status.Conditions {
				if c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
					return nil, nil, fmt.Errorf("the fleet refused the agent's certificate request %s: %s", cur.Name, c.Message)
				}
			}
			if len(cur.Status.Certificate) > 0 {
				return cur.Status.Certificate, keyPEM, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
