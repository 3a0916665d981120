package userkubeconfig

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/lotse/lotse/internal/userkubeconfig/userkubeconfigtest"
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

func TestIssue(t *testing.T) {
	cs := kubefake.NewClientset()
	signer := userkubeconfigtest.NewFakeSigner(t, cs, false)
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

	seen := signer.Seen()
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
	userkubeconfigtest.NewFakeSigner(t, cs, false)
	if _, err := Issue(context.Background(), cs, Request{User: "viewer", Groups: []string{"viewers"}, TTL: time.Hour}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if list, _ := cs.RbacV1().ClusterRoleBindings().List(context.Background(), metav1.ListOptions{}); len(list.Items) != 0 {
		t.Errorf("bindings made for a group without rights: %+v", list.Items)
	}
}

func TestIssueRefused(t *testing.T) {
	cs := kubefake.NewClientset()
	userkubeconfigtest.NewFakeSigner(t, cs, true)
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

// TestSignRefusesMoreThanANameAndGroups: a request made elsewhere may ask
// for nothing but its user and groups.
func TestSignRefusesMoreThanANameAndGroups(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	req := Request{User: "bob", Groups: []string{ViewerGroup}, TTL: time.Hour}
	for _, tc := range []struct {
		name string
		tmpl x509.CertificateRequest
		want string
	}{
		{"alternative names", x509.CertificateRequest{Subject: pkix.Name{CommonName: "bob", Organization: []string{ViewerGroup}}, DNSNames: []string{"kubernetes"}}, "alternative names"},
		{"another subject attribute", x509.CertificateRequest{Subject: pkix.Name{CommonName: "bob", Organization: []string{ViewerGroup}, OrganizationalUnit: []string{"x"}}}, "subject has attribute"},
		{"another user", x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice", Organization: []string{ViewerGroup}}}, `asks for user "alice"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := x509.CreateCertificateRequest(rand.Reader, &tc.tmpl, key)
			if err != nil {
				t.Fatal(err)
			}
			cs := kubefake.NewClientset()
			_, err = Sign(context.Background(), cs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), req, time.Second)
			var re RequestError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Sign: %v, want a request error saying %q", err, tc.want)
			}
			if list, _ := cs.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{}); len(list.Items) > 0 {
				t.Fatal("the cluster was asked")
			}
		})
	}
}
