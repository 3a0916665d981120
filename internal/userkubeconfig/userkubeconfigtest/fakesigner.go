// Package userkubeconfigtest holds a fake of a cluster's CSR signer for
// tests of code that asks clusters for client certificates.
package userkubeconfigtest

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/lotse/lotse/internal/pki"
)

// FakeSigner plays the controller-manager's CSR signer on a fake
// clientset: approved requests get a certificate of a test CA for the
// lifetime they ask; with deny set, they are marked Failed instead.
type FakeSigner struct {
	cs   *kubefake.Clientset
	deny bool
	ca   *pki.CA

	mu   sync.Mutex
	seen []certificatesv1.CertificateSigningRequest
}

func NewFakeSigner(t testing.TB, cs *kubefake.Clientset, deny bool) *FakeSigner {
	ca, err := pki.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	s := &FakeSigner{cs: cs, deny: deny, ca: ca}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			s.signApproved(t)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func (s *FakeSigner) signApproved(t testing.TB) {
	list, err := s.cs.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, csr := range list.Items {
		approved := false
		for _, c := range csr.Status.Conditions {
			approved = approved || c.Type == certificatesv1.CertificateApproved && c.Status == corev1.ConditionTrue
		}
		if !approved || len(csr.Status.Certificate) > 0 || len(csr.Status.Conditions) > 1 {
			continue
		}
		s.mu.Lock()
		s.seen = append(s.seen, csr)
		s.mu.Unlock()
		if s.deny {
			csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
				Type: certificatesv1.CertificateFailed, Status: corev1.ConditionTrue, Reason: "SignerValidationFailure", Message: "fake signer says no"})
		} else {
			block, _ := pem.Decode(csr.Spec.Request)
			req, err := x509.ParseCertificateRequest(block.Bytes)
			if err != nil {
				t.Errorf("CSR: %v", err)
				continue
			}
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: req.Subject,
				NotBefore: time.Now(), NotAfter: time.Now().Add(time.Duration(*csr.Spec.ExpirationSeconds) * time.Second),
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca.Cert, req.PublicKey, s.ca.Key)
			if err != nil {
				t.Errorf("sign: %v", err)
				continue
			}
			csr.Status.Certificate = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		}
		if _, err := s.cs.CertificatesV1().CertificateSigningRequests().UpdateStatus(context.Background(), &csr, metav1.UpdateOptions{}); err != nil {
			t.Errorf("update CSR status: %v", err)
		}
	}
}

// Seen are the approved requests the signer answered.
func (s *FakeSigner) Seen() []certificatesv1.CertificateSigningRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]certificatesv1.CertificateSigningRequest(nil), s.seen...)
}

// CA is the fake signer's CA.
func (s *FakeSigner) CA() *pki.CA { return s.ca }
