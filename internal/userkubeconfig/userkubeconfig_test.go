package userkubeconfig

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/lotse/lotse/internal/pki"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		req     Request
		wantErr string
	}{
		{"admin for 8h", Request{User: "alice@example.com", Groups: []string{AdminGroup}, TTL: 8 * time.Hour}, ""},
		{"no groups", Request{User: "bob", TTL: time.Hour}, ""},
		{"too short", Request{User: "bob", TTL: 5 * time.Minute}, "--expires"},
		{"too long", Request{User: "bob", TTL: 8 * 24 * time.Hour}, "--expires"},
		{"empty user", Request{TTL: time.Hour}, "--user"},
		{"system user", Request{User: "system:admin", TTL: time.Hour}, "system:"},
		{"masters", Request{User: "bob", Groups: []string{"system:masters"}, TTL: time.Hour}, AdminGroup},
		{"other system group", Request{User: "bob", Groups: []string{"system:nodes"}, TTL: time.Hour}, "--group"},
		{"odd group", Request{User: "bob", Groups: []string{"a b"}, TTL: time.Hour}, "--group"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want an error naming %q", err, tt.wantErr)
			}
		})
	}
}

// fakeSigner plays the controller-manager's CSR signer on a fake
// clientset: approved requests get a certificate of a test CA for the
// lifetime they ask; with deny set, they are marked Failed instead.
type fakeSigner struct {
	cs   *kubefake.Clientset
	deny bool
	ca   *pki.CA

	mu   sync.Mutex
	seen []certificatesv1.CertificateSigningRequest
}

func newFakeSigner(t *testing.T, cs *kubefake.Clientset, deny bool) *fakeSigner {
	ca, err := pki.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSigner{cs: cs, deny: deny, ca: ca}
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

func (s *fakeSigner) signApproved(t *testing.T) {
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

func TestIssue(t *testing.T) {
	cs := kubefake.NewClientset()
	signer := newFakeSigner(t, cs, false)
	req := Request{User: "alice", Groups: []string{AdminGroup, "team-a"}, TTL: 8 * time.Hour}
	issued, err := Issue(context.Background(), cs, req, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(issued.Cert)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	groups := slices.Sorted(slices.Values(cert.Subject.Organization))
	if cert.Subject.CommonName != "alice" || strings.Join(groups, ",") != AdminGroup+",team-a" {
		t.Errorf("certificate subject %v", cert.Subject)
	}
	if until := time.Until(issued.NotAfter); until > 8*time.Hour || until < 8*time.Hour-time.Minute {
		t.Errorf("certificate valid for %s, want 8h", until)
	}
	keyBlock, _ := pem.Decode(issued.Key)
	key, err := x509.ParseECPrivateKey(keyBlock.Bytes)
	if err != nil || !key.PublicKey.Equal(cert.PublicKey) {
		t.Errorf("the key does not belong to the certificate (%v)", err)
	}

	signer.mu.Lock()
	seen := signer.seen
	signer.mu.Unlock()
	if len(seen) != 1 {
		t.Fatalf("%d requests signed, want 1", len(seen))
	}
	spec := seen[0].Spec
	if spec.SignerName != certificatesv1.KubeAPIServerClientSignerName || spec.ExpirationSeconds == nil || *spec.ExpirationSeconds != 8*3600 {
		t.Errorf("request spec: signer %s, expirationSeconds %v", spec.SignerName, spec.ExpirationSeconds)
	}
	// Answered requests do not stay behind.
	if left, _ := cs.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{}); len(left.Items) != 0 {
		t.Errorf("%d certificate requests left", len(left.Items))
	}
	b, err := cs.RbacV1().ClusterRoleBindings().Get(context.Background(), AdminBinding, metav1.GetOptions{})
	if err != nil || b.RoleRef.Name != "cluster-admin" || len(b.Subjects) != 1 || b.Subjects[0].Name != AdminGroup {
		t.Errorf("admin binding: %v %+v", err, b)
	}
	if !issued.BoundAdminGroup {
		t.Error("the binding was made but not reported")
	}
	again, err := Issue(context.Background(), cs, req, 10*time.Second)
	if err != nil || again.BoundAdminGroup {
		t.Errorf("second kubeconfig: %v, reported a new binding: %v", err, again.BoundAdminGroup)
	}

	// A binding changed by hand is not trusted to give the rights.
	b.RoleRef.Name = "view"
	if err := cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), AdminBinding, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	b.ResourceVersion = ""
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(context.Background(), b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Issue(context.Background(), cs, req, 10*time.Second); err == nil || !strings.Contains(err.Error(), "changed by hand") {
		t.Errorf("Issue() with a changed binding = %v, want it named", err)
	}
}

func TestIssueWithoutAdminGroupBindsNothing(t *testing.T) {
	cs := kubefake.NewClientset()
	newFakeSigner(t, cs, false)
	if _, err := Issue(context.Background(), cs, Request{User: "viewer", Groups: []string{"viewers"}, TTL: time.Hour}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if list, _ := cs.RbacV1().ClusterRoleBindings().List(context.Background(), metav1.ListOptions{}); len(list.Items) != 0 {
		t.Errorf("bindings made for a group without rights: %+v", list.Items)
	}
}

func TestIssueRefused(t *testing.T) {
	cs := kubefake.NewClientset()
	newFakeSigner(t, cs, true)
	_, err := Issue(context.Background(), cs, Request{User: "alice", TTL: time.Hour}, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "fake signer says no") {
		t.Errorf("Issue() = %v, want the signer's refusal", err)
	}
}

func TestIssueNobodySigns(t *testing.T) {
	cs := kubefake.NewClientset()
	_, err := Issue(context.Background(), cs, Request{User: "alice", TTL: time.Hour}, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "hibernated") {
		t.Errorf("Issue() = %v, want a hint that the controller-manager is not there", err)
	}
}
